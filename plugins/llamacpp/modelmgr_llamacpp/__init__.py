"""modelmgr's llama.cpp backend: GGUF files on llama-cpp-python.

Written as a third-party plugin is: found through the ``modelmgr`` entry-point group
(``llamacpp = "modelmgr_llamacpp.plugin"``), importing only the ``modelmgr`` facade. llama_cpp is
imported inside the methods that need it, so listing or choosing backends stays cheap.
"""
