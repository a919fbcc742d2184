"""Runs that are not one training run: each `run(config, workdir)`."""


def print_tables(tables, where: str) -> int:
    """What a runner's `launch` prints: each markdown table under its title, then where the
    files are (`where`, e.g. "report.md, rows.json and 3 plots are in DIR"); exit status 0."""
    for title, table in tables.items():
        print(f"\n## {title}\n\n{table}")
    print(f"\n{where}")
    return 0
