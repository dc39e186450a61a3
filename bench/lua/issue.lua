-- Token endpoint: client_credentials issuance. $BENCH_BASIC is the base64
-- of `client:secret`; every request creates a grant in the store.
dofile(os.getenv("BENCH_LUA") .. "/report.lua")

wrk.method = "POST"
wrk.body = "grant_type=client_credentials&scope=photos.read"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic " .. os.getenv("BENCH_BASIC")
