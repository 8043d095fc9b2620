from graphsurgery.cli import main

main()
