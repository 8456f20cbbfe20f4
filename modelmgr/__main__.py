from modelmgr.cli import main

main()
