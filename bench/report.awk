# Turns bench/run's measurements into Markdown tables (POSIX awk; Debian's
# default mawk has no asort, so medians sort by hand).
#
# Input rows (tab-separated):
#   scenario conns round rps p50_us p99_us rss_kb errors cpu_us_per_request
# Medians over rounds; peak RSS is the maximum over rounds. Ratios are taken
# within each round first (A and B measured minutes apart drift together),
# then the median of those per-round ratios is shown.

BEGIN { FS = "\t" }

{
    s = $1; c = $2; r = $3
    key = s SUBSEP c
    if (!(key in n)) n[key] = 0
    n[key]++
    rps[key, n[key]] = $4
    p50[key, n[key]] = $5
    p99[key, n[key]] = $6
    if ($7 + 0 > rss[key] + 0) rss[key] = $7
    errors[key] += $8
    cpu[key, n[key]] = $9
    by_round[s, c, r] = $4
    cpu_round[s, c, r] = $9
    if (!(c in seen_conns)) { seen_conns[c] = 1; conns_list[++nconns] = c }
    if (!(r in seen_round)) { seen_round[r] = 1; rounds[++nrounds] = r }
}

function median(values, count,    i, j, t, sorted) {
    for (i = 1; i <= count; i++) sorted[i] = values[i] + 0
    for (i = 2; i <= count; i++) {
        t = sorted[i]
        for (j = i - 1; j >= 1 && sorted[j] > t; j--) sorted[j + 1] = sorted[j]
        sorted[j + 1] = t
    }
    if (count == 0) return 0
    if (count % 2) return sorted[(count + 1) / 2]
    return (sorted[count / 2] + sorted[count / 2 + 1]) / 2
}

function column(table, key, count,    i, out) {
    for (i = 1; i <= count; i++) out[i] = table[key, i]
    return median(out, count)
}

function ms(us) { return sprintf("%.2f ms", us / 1000) }
function mb(kb) { return kb > 0 ? sprintf("%.1f MB", kb / 1024) : "-" }

function spread(key, count,    i, lo, hi, v) {
    lo = ""; hi = ""
    for (i = 1; i <= count; i++) {
        v = rps[key, i] + 0
        if (lo == "" || v < lo) lo = v
        if (hi == "" || v > hi) hi = v
    }
    return count > 1 ? sprintf("%d–%d", lo, hi) : "-"
}

# Median over rounds of a/b measured in the same round; "-" when missing.
# `table` is "rps" or "cpu".
# Whether scenario s was measured at any connection count.
function measured(s,    i) {
    for (i = 1; i <= nconns; i++) if ((s, conns_list[i]) in n) return 1
    return 0
}

function ratio(a, b, c, table,    i, k, r, x, y, vals) {
    k = 0
    for (i = 1; i <= nrounds; i++) {
        r = rounds[i]
        if (!(((a, c, r) in by_round) && ((b, c, r) in by_round))) continue
        x = table == "cpu" ? cpu_round[a, c, r] : by_round[a, c, r]
        y = table == "cpu" ? cpu_round[b, c, r] : by_round[b, c, r]
        if (y > 0) vals[++k] = x / y
    }
    return k ? sprintf("%.2f", median(vals, k)) : "-"
}

# Median over rounds of a - b (server CPU per request, µs) measured in the
# same round; "-" when missing.
function cpu_difference(a, b, c,    i, k, r, vals) {
    k = 0
    for (i = 1; i <= nrounds; i++) {
        r = rounds[i]
        if (!(((a, c, r) in cpu_round) && ((b, c, r) in cpu_round))) continue
        vals[++k] = cpu_round[a, c, r] - cpu_round[b, c, r]
    }
    return k ? sprintf("%.1f µs", median(vals, k)) : "-"
}

function table(title, wanted,    names, nnames, i, j, key, count) {
    printed = 0
    nnames = split(wanted, names, " ")
    for (i = 1; i <= nnames; i++) {
        for (j = 1; j <= nconns; j++) {
            key = names[i] SUBSEP conns_list[j]
            if (!(key in n)) continue
            if (!printed) {
                print "### " title
                print ""
                print "| scenario | conns | req/s (median) | req/s range | p50 | p99 | server CPU per request | peak RSS | errors |"
                print "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
                printed = 1
            }
            count = n[key]
            printf "| %s | %s | %d | %s | %s | %s | %.1f µs | %s | %d |\n", names[i], conns_list[j],
                column(rps, key, count), spread(key, count), ms(column(p50, key, count)),
                ms(column(p99, key, count)), column(cpu, key, count), mb(rss[key]), errors[key]
        }
    }
    if (printed) print ""
}

END {
    table("Proxy paths", "direct nginx nginx-lua pingora-bare pingora-core refgate-hot refgate-cold phantom-hot phantom-cold")
    table("Token endpoint", "token-issue token-introspect")
    print "### Ratios (median of per-round ratios)"
    print ""
    print "pingora-bare is pingora alone with refgate's pingora settings and no refgate logic: `refgate-hot / pingora-bare` is what refgate's own work costs, `pingora-bare / nginx` what pingora costs."
    print ""
    print "| conns | measure | refgate-hot / nginx | refgate-hot / direct | refgate-hot / pingora-bare | pingora-bare / nginx | nginx / direct | refgate-cold / refgate-hot |"
    print "|---:|---|---:|---:|---:|---:|---:|---:|"
    for (i = 1; i <= nconns; i++) {
        c = conns_list[i]
        if (!(("refgate-hot", c) in n)) continue
        printf "| %s | req/s | %s | %s | %s | %s | %s | %s |\n", c, ratio("refgate-hot", "nginx", c, "rps"),
            ratio("refgate-hot", "direct", c, "rps"), ratio("refgate-hot", "pingora-bare", c, "rps"),
            ratio("pingora-bare", "nginx", c, "rps"), ratio("nginx", "direct", c, "rps"),
            ratio("refgate-cold", "refgate-hot", c, "rps")
        printf "| %s | CPU per request | %s | %s | %s | %s | %s | %s |\n", c, ratio("refgate-hot", "nginx", c, "cpu"),
            ratio("refgate-hot", "direct", c, "cpu"), ratio("refgate-hot", "pingora-bare", c, "cpu"),
            ratio("pingora-bare", "nginx", c, "cpu"), ratio("nginx", "direct", c, "cpu"),
            ratio("refgate-cold", "refgate-hot", c, "cpu")
    }
    print ""
    if (measured("nginx-lua")) {
        print "### Against nginx + Lua (median of per-round ratios)"
        print ""
        print "nginx-lua is the phantom-token gateway an nginx shop writes instead of refgate. Above 1.00 refgate is ahead for req/s; below 1.00 for CPU per request."
        print ""
        print "| conns | refgate-hot / nginx-lua req/s | refgate-hot / nginx-lua CPU per request | nginx-lua / nginx req/s | p99 refgate-hot - nginx-lua |"
        print "|---:|---:|---:|---:|---:|"
        for (i = 1; i <= nconns; i++) {
            c = conns_list[i]
            if (!(("nginx-lua", c) in n) || !(("refgate-hot", c) in n)) continue
            printf "| %s | %s | %s | %s | %s |\n", c, ratio("refgate-hot", "nginx-lua", c, "rps"),
                ratio("refgate-hot", "nginx-lua", c, "cpu"), ratio("nginx-lua", "nginx", c, "rps"),
                ms(column(p99, "refgate-hot" SUBSEP c, n["refgate-hot", c]) - column(p99, "nginx-lua" SUBSEP c, n["nginx-lua", c]))
        }
        print ""
        if (measured("pingora-core")) {
            print "What pingora allows: pingora-bare (pingora-proxy, no logic) and pingora-core (pingora-core's own loop, no pingora-proxy, no logic) against nginx-lua. A refgate hot path can be no faster than the engine under it."
            print ""
            print "| conns | pingora-bare / nginx-lua req/s | pingora-core / nginx-lua req/s | pingora-core / pingora-bare req/s | pingora-core / pingora-bare CPU per request |"
            print "|---:|---:|---:|---:|---:|"
            for (i = 1; i <= nconns; i++) {
                c = conns_list[i]
                if (!(("nginx-lua", c) in n) || !(("pingora-core", c) in n)) continue
                printf "| %s | %s | %s | %s | %s |\n", c, ratio("pingora-bare", "nginx-lua", c, "rps"),
                    ratio("pingora-core", "nginx-lua", c, "rps"), ratio("pingora-core", "pingora-bare", c, "rps"),
                    ratio("pingora-core", "pingora-bare", c, "cpu")
            }
            print ""
        }
    }
    if (!measured("phantom-hot")) exit
    print "### Phantom-token route (median of per-round ratios)"
    print ""
    print "`phantom-hot / refgate-hot`: a cached JWT against a cached stored credential (the target is at least 0.95 for req/s). `phantom-cold - refgate-cold`: the server CPU one JWT signature adds to a request when nothing is cached, i.e. the signing cost per token."
    print ""
    print "| conns | phantom-hot / refgate-hot req/s | phantom-hot / refgate-hot CPU per request | phantom-cold / refgate-cold req/s | signing cost per token (phantom-cold - refgate-cold CPU per request) |"
    print "|---:|---:|---:|---:|---:|"
    for (i = 1; i <= nconns; i++) {
        c = conns_list[i]
        if (!(("phantom-hot", c) in n)) continue
        printf "| %s | %s | %s | %s | %s |\n", c, ratio("phantom-hot", "refgate-hot", c, "rps"),
            ratio("phantom-hot", "refgate-hot", c, "cpu"), ratio("phantom-cold", "refgate-cold", c, "rps"),
            cpu_difference("phantom-cold", "refgate-cold", c)
    }
    print ""
}
