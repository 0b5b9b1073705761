"""Engine processes, one package each; ``<pkg>/unit.py`` describes it to the supervisor."""
