from attriblm.cli import main

main()
