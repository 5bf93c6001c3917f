"""Protobuf messages for what profiling agents send: push.v1 (Pyroscope's push API) and pprof.

The ``*_pb2.py`` modules are generated and committed; regenerate them after editing a .proto with::

    .venv/bin/python -m grpc_tools.protoc -I. --python_out=. \
        profiling/proto/push.proto profiling/proto/profile.proto

The descriptors are registered under ``profiling/proto/...`` so they cannot clash with another
package's ``profile.proto`` in protobuf's default pool.
"""
