from gchat.cli import main

main()
