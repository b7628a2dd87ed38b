"""The `aesthetic` command line (cli/main.py): plain functions of the other packages behind one verb per job."""
