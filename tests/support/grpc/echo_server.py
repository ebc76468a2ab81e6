"""A real gRPC server (Debian's python3-grpcio) for idlegate's h2c tests.

No generated code: raw bytes in and out. Methods of /echo.Echo/:
  Say     (unary)            answers its request as it came;
  Count   (server streaming) answers b"0", b"1", ... up to the number asked;
  Fail    (unary)            fails with NOT_FOUND "nothing here" (grpc-status
                             travels in trailers).
Usage: echo_server.py PORT
"""
import sys
from concurrent import futures

import grpc


def say(request, context):
    return request


def count(request, context):
    for i in range(int(request)):
        yield str(i).encode()


def fail(request, context):
    context.abort(grpc.StatusCode.NOT_FOUND, "nothing here")


handlers = grpc.method_handlers_generic_handler(
    "echo.Echo",
    {
        "Say": grpc.unary_unary_rpc_method_handler(say),
        "Count": grpc.unary_stream_rpc_method_handler(count),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
    },
)
server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
server.add_generic_rpc_handlers((handlers,))
server.add_insecure_port("127.0.0.1:" + sys.argv[1])
server.start()
server.wait_for_termination()
