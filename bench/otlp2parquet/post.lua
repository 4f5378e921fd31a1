-- wrk: POST the protobuf file named by $BODY to the URL, as an OTLP/HTTP trace export.
local file = assert(io.open(os.getenv("BODY"), "rb"))
wrk.method = "POST"
wrk.body = file:read("*all")
file:close()
wrk.headers["Content-Type"] = "application/x-protobuf"
