#!/bin/sh
# Golden diagnostics: for every NAME.yaml here, `pxc check NAME.yaml` (with
# the flags on the file's first line if it starts with "# args:") must fail
# with exit status 1 and print exactly NAME.expected on stderr.
pxc="$1"
fail=0; pass=0
for spec in *.yaml; do
  [ -e "$spec" ] || continue
  name=${spec%.yaml}
  args=$(sed -n '1s/^# args: //p' "$spec")
  # shellcheck disable=SC2086
  "$pxc" check "$spec" $args >/dev/null 2>"/tmp/pxc-golden-$$.err"
  rc=$?
  if [ $rc -ne 1 ]; then
    echo "FAIL $name: exit status $rc, expected 1"; fail=$((fail+1)); continue
  fi
  if ! diff -u "$name.expected" "/tmp/pxc-golden-$$.err"; then
    echo "FAIL $name: diagnostics differ"; fail=$((fail+1)); continue
  fi
  pass=$((pass+1))
done
rm -f "/tmp/pxc-golden-$$.err"
echo "$pass passed, $fail failed"
[ $fail -eq 0 ] && [ $pass -gt 0 ]
