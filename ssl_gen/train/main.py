"""`python -m ssl_gen.train.main ...`: an alias of `python -m ssl_gen.main ...`, the one
command line (same flags, same behaviour; see that module's docstring)."""

if __name__ == "__main__":
    from ssl_gen.main import run_cli

    run_cli()
