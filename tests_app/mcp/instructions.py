"""What the MCP server tells a model about itself (also the stdio bridge's, which runs without
Django)."""

INSTRUCTIONS = (
    "replaybench runs benchmark tests: recorded conversations are replayed against a model "
    "(the target), turn by turn, and each replay is graded. To run a test: search_benchmarks, "
    "start_test, then for every run: next_run, run_replay, wait_for_invocation, end_invocation "
    "(grade=true asks the AI judge; or give your own score). next_run fails with code "
    "test_completed when every run is claimed. get_test reads progress and figures, "
    "compare_tests compares a candidate with a baseline. A failed call is a tool error whose "
    'text is {"detail": sentence, "code": machine code}, as in the REST API.'
)
