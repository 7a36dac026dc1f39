"""Closing the loop with Rucio: which corrupted and missing files a site would declare bad
(``plan``), declaring them and recording Rucio's answers (``apply``), and the input files
of the tools people already use when the Rucio client is not installed (``files``)."""
