from tests_app.cli.main import main

main()
