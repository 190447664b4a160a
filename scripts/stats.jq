# Summary statistics shared by the tables of the demo scripts: `jq -L scripts` and
# `include "stats";`. `pm` is "mean ± sample standard deviation" (0 for one value).
def mean: add / length;
def std: (mean as $m | if length > 1 then (map((. - $m) * (. - $m)) | add / (length - 1) | sqrt) else 0 end);
def fmt(d): (. * pow(10; d) | round) / pow(10; d) | tostring;
def fmt: fmt(3);
def pm(d): if length == 0 then "" else "\(mean | fmt(d)) ± \(std | fmt(d))" end;
def pm: pm(3);
