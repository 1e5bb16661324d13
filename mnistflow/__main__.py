from mnistflow.cli import app

app(prog_name="mnistflow")
