"""The gRPC client of idlegate's h2c tests: calls /echo.Echo/ at ADDR and
prints one line per result: `say: hello`, `count: 0 1 2`, `fail: NOT_FOUND
nothing here`. Usage: echo_client.py ADDR
"""
import sys

import grpc

with grpc.insecure_channel(sys.argv[1]) as channel:
    print("say:", channel.unary_unary("/echo.Echo/Say")(b"hello", timeout=60).decode())
    stream = channel.unary_stream("/echo.Echo/Count")(b"3", timeout=60)
    print("count:", " ".join(m.decode() for m in stream))
    try:
        channel.unary_unary("/echo.Echo/Fail")(b"", timeout=60)
        print("fail: no error")
    except grpc.RpcError as e:
        print("fail:", e.code().name, e.details())
