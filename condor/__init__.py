"""Running tester workers as HTCondor jobs (one sweep, many jobs). The submit side and the
job wrapper arrive with the HTCondor issue; until then ``pnfsmon check --workers N`` runs the
same workers locally."""
