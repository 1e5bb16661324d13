"""What a person reads after a run: one offline HTML report and a short terminal summary.

gather.py gathers what the run produced (reports/*.json, dvc.lock, the registry, DVC's own
metrics/params/plots diffs against the baseline), charts.py renders DVC's plot definitions to
SVG without a browser or network, page.py writes the self-contained report.html, summary.py
the terminal summary, plots_template.py the offline page template of `dvc plots show`.
"""
