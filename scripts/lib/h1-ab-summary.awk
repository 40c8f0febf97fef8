# The summary of scripts/bench-h1-ab.sh, over its rounds file (lines "ROUND PROXY USER SYS
# TOTAL RATIO", nginx first in each round; other lines ignored): per proxy the medians of
# its user, system and total µs per request and of its per-round ratios to nginx's, then
# per meshedge build the room the CPU goal leaves it. Run as
# awk -f scripts/lib/median.awk -f scripts/lib/h1-ab-summary.awk ROUNDS_FILE.
$1 ~ /^[0-9]+$/ && $2 == "nginx" { nu = $3; ns = $4; nt = $5 }
$1 ~ /^[0-9]+$/ {
  if (!($2 in seen)) { seen[$2] = 1; order[++k] = $2 }
  u[$2] = u[$2] " " $3; s[$2] = s[$2] " " $4; t[$2] = t[$2] " " $5
  ru[$2] = ru[$2] " " $3 / nu; rs[$2] = rs[$2] " " $4 / ns; rt[$2] = rt[$2] " " $5 / nt }
END { for (i = 1; i <= k; i++) { p = order[i]
  printf "%-28s %8.1f %8.1f %8.1f %8.2f %8.2f %8.2f\n", p, median(u[p]), median(s[p]),
    median(t[p]), median(ru[p]), median(rs[p]), median(rt[p]) }
  # The CPU goal's room: at a build's own system time, the user time 0.7x of nginx's total
  # leaves (negative: out of reach whatever the user-space work).
  for (i = 1; i <= k; i++) { p = order[i]; if (p == "nginx") continue
    room = 0.7 * median(t["nginx"]) - median(s[p])
    printf "0.7x of nginx's total at %s's system time leaves %.1f µs of user time (%.2fx nginx's; it spends %.2fx)\n",
      p, room, room / median(u["nginx"]), median(ru[p]) } }
