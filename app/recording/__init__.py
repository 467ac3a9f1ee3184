"""Recording and review: everything a tester keeps after a session.

- recorder.py: taps a live session's events into a recording folder;
- media.py: the lossless video and WAV writers/readers;
- library.py: listing, reading and deleting recordings (the Review tab's data);
- export.py: a recording as a zip (mp4 with both voices, captions, summary);
- regression.py, rerun.py: re-run a recording through the current models and compare.
"""
