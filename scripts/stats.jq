# Summary statistics shared by the tables of the demo scripts: `jq -L scripts` and
# `include "stats";`. `pm` is "mean ± sample standard deviation" (0 for one value).
def mean: add / length;
def std: (mean as $m | if length > 1 then (map((. - $m) * (. - $m)) | add / (length - 1) | sqrt) else 0 end);
def fmt(d): (. * pow(10; d) | round) / pow(10; d) | tostring;
def fmt: fmt(3);
def pm(d): if length == 0 then "" else "\(mean | fmt(d)) ± \(std | fmt(d))" end;
def pm: pm(3);
# Half-width of the 95 % confidence interval of the mean: Student's t (n − 1 degrees of freedom,
# two-sided) times std / √n; the normal 1.96 from 31 values on.
def t95: [0, 0, 12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
          2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052,
          2.048, 2.045][length] // 1.96;
def ci95: if length < 2 then 0 else (t95 * std / (length | sqrt)) end;
def ci(d): if length == 0 then "" else "\(mean | fmt(d)) ± \(ci95 | fmt(d))" end;
