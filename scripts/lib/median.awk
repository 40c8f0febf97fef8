# Shared by the bench scripts' summaries (awk -f scripts/lib/median.awk -f PROGRAM):
# median(list) is the median of the space-separated numbers in `list` (insertion sort:
# a few rounds, and mawk has no asort).
function median(list,   a, n, i, j, v) {
  n = split(list, a, " ")
  for (i = 2; i <= n; i++) { v = a[i] + 0; for (j = i - 1; j > 0 && a[j] + 0 > v; j--) a[j + 1] = a[j]; a[j + 1] = v }
  return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
