"""Hydra configs of hdrunet-pl (a package so that they ship inside the installed wheel)."""
