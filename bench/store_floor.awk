# Renders the "store read alone" section of bench/RESULTS.md.
#
#   awk -v tokens=20000 -f bench/store_floor.awk floor.txt results.tsv
#
# floor.txt: examples/bench_store_read's output, one "step nanoseconds"
# line per step. results.tsv: the rounds (see report.awk); its refgate-hot
# and refgate-cold rows at 16 connections give the CPU a cold request adds
# in the proxy, set beside the lookup alone and the budget a cold/hot
# req/s ratio of 0.9 leaves.

BEGIN { FS = "[ \t]+" }

FNR == NR {
    ns[$1] = $2
    next
}

$2 == 16 && $1 == "refgate-hot" { hot[$3] = $9 }
$2 == 16 && $1 == "refgate-cold" { cold[$3] = $9 }

function us(step) {
    return (step in ns) ? sprintf("%.1f", ns[step] / 1000) : "-"
}

function median(v, n,    i, j, t) {
    for (i = 2; i <= n; i++)
        for (j = i; j > 1 && v[j - 1] > v[j]; j--) {
            t = v[j]; v[j] = v[j - 1]; v[j - 1] = t
        }
    return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
}

function row(step, what) {
    printf "| %s | %s | %s |\n", step, us(step), what
}

END {
    print "### The cold path's store read, alone"
    print ""
    printf "examples/bench_store_read on the cold instance's store and its %s tokens, the instance idle: each step looks every token up once per pass on one thread pinned like the servers; the median over 5 passes of thread CPU time per lookup. The SQLite steps open the file as refgate's readers do (page cache and memory map).\n", tokens
    print ""
    print "| step | µs per lookup | what it does |"
    print "|---|---:|---|"
    row("sqlite_token_same_one_transaction", "SQLite, one B-tree, the same token each time, every read in one read transaction: the statement's own work")
    row("sqlite_token_same", "the same, each read its own transaction (as refgate's reads are): adds the transaction and its two `fcntl` locks on the WAL index")
    row("sqlite_token", "SQLite, one B-tree (the token), a different token each time")
    row("sqlite_join", "SQLite, the three B-trees a lookup descends (token, grants' id index, grant row), one column")
    row("store_find_token", "the store's read as refgate makes it: every column of the token and its grant, decoded into records")
    row("lookup_cold", "a lookup with no cache: that read, the custom data opened (AES-256-GCM) and its credentials prepared")
    row("lookup_hot", "the same lookups answered from a cache holding every token")
    print ""
    n = 0
    for (r in hot)
        if (r in cold) {
            h[++n] = hot[r]
            d[n] = cold[r] - hot[r]
        }
    if (n && ("lookup_cold" in ns) && ("lookup_hot" in ns)) {
        h_med = median(h, n)
        printf "At 16 connections (medians over the rounds): refgate-hot used %.1f µs of CPU per request and refgate-cold %.1f µs more. A cold lookup alone costs %.1f µs more than a cached one. A cold/hot req/s ratio of 0.9 leaves a cold request %.1f µs of CPU beyond the hot path's.\n", h_med, median(d, n), (ns["lookup_cold"] - ns["lookup_hot"]) / 1000, h_med * (1 / 0.9 - 1)
        print ""
    }
}
