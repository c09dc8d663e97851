from quantrs.cli import main

main()
