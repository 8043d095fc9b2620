from graphsurgery.launch import main

main()
