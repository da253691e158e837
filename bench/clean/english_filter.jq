# The same English filter as the cleaner, in jq: run with `jq -cR -f english_filter.jq`.
# -R reads raw lines so a bad line is skipped (fromjson?) instead of aborting.
fromjson?
| objects
| select(
    (.language // .lang // .language_code)
    | strings
    | ascii_downcase
    | ltrimstr(" ") | rtrimstr(" ")
    | test("^(en|eng|english|en[-_].+)$")
  )
