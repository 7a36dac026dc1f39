"""``pnfsmon demo``: the whole job (crawl → check → faults → check → report) on a small
sample tree, for a newcomer's first command. Not used by anything else."""
