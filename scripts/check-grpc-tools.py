"""A standard gRPC client against a fedsync node: Python's grpcio with
grpcio-reflection, which speaks server reflection v1alpha only (as grpcurl
1.8 does). With nothing but the operator's PEM files and the node's
certificate, it lists the node's services by reflection, builds the Status
request from the descriptors the node serves, calls it, and asks the
standard health service. Exit 0 only if all of that works.

Usage: check-grpc-tools.py ADDRESS FEDERATION_DIR
"""

import sys

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


def main(address, fed):
    read = lambda p: open(f"{fed}/{p}", "rb").read()
    creds = grpc.ssl_channel_credentials(
        root_certificates=read("hq/tls.crt"),
        private_key=read("operator/tls.key"),
        certificate_chain=read("operator/tls.crt"),
    )
    channel = grpc.secure_channel(
        address, creds, options=[("grpc.ssl_target_name_override", "fedsync")]
    )
    db = ProtoReflectionDescriptorDatabase(channel)
    services = sorted(db.get_services())
    print("services (reflection v1alpha):", ", ".join(services))
    for want in ["fedsync.v1.Client", "fedsync.v1.Peer", "grpc.health.v1.Health"]:
        assert want in services, f"{want} missing from {services}"

    pool = DescriptorPool(db)
    method = pool.FindServiceByName("fedsync.v1.Client").FindMethodByName("Status")
    request = message_factory.GetMessageClass(method.input_type)
    reply = message_factory.GetMessageClass(method.output_type)
    status = channel.unary_unary(
        "/fedsync.v1.Client/Status",
        request_serializer=request.SerializeToString,
        response_deserializer=reply.FromString,
    )(request(), timeout=10)
    print(f"Status: {status.name}, roster v{status.roster_version}, "
          f"{len(status.peers)} members, serving={status.serving}")
    assert status.name == "hq", status.name
    assert status.serving

    health = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=""), timeout=10
    )
    print("health:", health_pb2.HealthCheckResponse.ServingStatus.Name(health.status))
    assert health.status == health_pb2.HealthCheckResponse.SERVING


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
    print("standard gRPC tools OK")
