from mnistflow.stack.command import app

app(prog_name="python -m mnistflow.stack")
