"""Audio featurizers shared by training and the streaming server (numpy only, no torch).

Import the submodules directly, e.g. `from f2f.features.mel import log_mel, StreamingLogMel`;
this package module stays free of imports so that importing it costs nothing.
"""
