"""modelmgr's built-in backends over transformers: cpu, cuda and int8.

Written exactly as a third-party plugin would be: found through the ``modelmgr`` entry-point
group (``transformers = "modelmgr_transformers.plugin"``), using only modelmgr's public API.
torch, transformers and bitsandbytes are imported inside the methods that need them, so
listing backends or choosing one costs no more than a few file reads.
"""
