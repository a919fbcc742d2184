"""The distribution ships every package of ssl_gen/ and the experiment configs.

pyproject.toml lists its packages by name (the configs of experiments/ are installed as
`ssl_gen_experiments`, which setuptools' `find` cannot rename), so a new subpackage has to be
added there; an editable install would not notice, a wheel (Colab's install) would lack it.
"""

import os
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_pyproject_lists_every_package_and_ships_the_configs():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        setuptools = tomllib.load(f)["tool"]["setuptools"]
    found = {os.path.relpath(d, ROOT).replace(os.sep, ".")
             for d, _, files in os.walk(os.path.join(ROOT, "ssl_gen"))
             if "__pycache__" not in d and any(f.endswith(".py") for f in files)}
    missing = found - set(setuptools["packages"])
    assert not missing, f"pyproject.toml [tool.setuptools] packages lacks {sorted(missing)}"
    assert setuptools["package-dir"] == {"ssl_gen_experiments": "experiments"}
    assert "ssl_gen_experiments" in setuptools["packages"]
