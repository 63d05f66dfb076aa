#!/usr/bin/env python3
"""Talk to a sealroom enclave server with nothing but pyarrow.

    sealroom attest --rest https://127.0.0.1:8080 --room-file room.yaml --save-cert enclave.pem
    TOKEN=$(sealroom token --key acme.key.pem --participant acme --room-file room.yaml)
    python examples/pyarrow_client.py --flight grpc+tls://127.0.0.1:50051 --enclave-cert enclave.pem \
        --room <room id> --token "$TOKEN" upload crm crm_hashed.parquet
    python examples/pyarrow_client.py --flight grpc+tls://127.0.0.1:50051 --enclave-cert enclave.pem \
        --room <room id> --token "$TOKEN" run overlap

The server speaks only TLS, with a key generated inside the enclave. `sealroom attest` verifies the
enclave's attestation evidence against the room file and saves its certificate; pyarrow then trusts
that certificate alone (tls_root_certs), so the token goes only to the attested enclave.

`upload` sends a Parquet file to a table with DoPut; the descriptor is the path
rooms/<room id>/tables/<table>. `run` runs a computation with the `run-computation` action and reads
every released section with DoGet. Both print JSON.
"""
import argparse
import json
import sys

import pyarrow.flight as flight
import pyarrow.parquet as pq


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flight", required=True, help="e.g. grpc+tls://127.0.0.1:50051")
    parser.add_argument(
        "--enclave-cert", required=True, help="the certificate `sealroom attest --save-cert` wrote (PEM)"
    )
    parser.add_argument("--room", required=True, help="room id (sealroom room id <room file>)")
    parser.add_argument("--token", required=True, help="the participant's token (`sealroom token --key ... --participant ...`)")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("upload")
    up.add_argument("table")
    up.add_argument("file")
    run = commands.add_parser("run")
    run.add_argument("computation")
    args = parser.parse_args()

    with open(args.enclave_cert, "rb") as f:
        enclave_cert = f.read()
    # Trust exactly the attested enclave's certificate.
    client = flight.FlightClient(args.flight, tls_root_certs=enclave_cert)
    # Every call carries the participant's token.
    options = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {args.token}".encode())])

    if args.command == "upload":
        table = pq.read_table(args.file)
        descriptor = flight.FlightDescriptor.for_path("rooms", args.room, "tables", args.table)
        writer, reader = client.do_put(descriptor, table.schema, options=options)
        writer.write_table(table, max_chunksize=100_000)
        writer.done_writing()
        ack = reader.read()  # the server's commit record, once every row is validated and stored
        writer.close()
        print(json.dumps(json.loads(ack.to_pybytes())))
    else:
        body = json.dumps({"room_id": args.room, "computation": args.computation}).encode()
        results = list(client.do_action(flight.Action("run-computation", body), options=options))
        run = json.loads(results[0].body.to_pybytes())
        sections = {}
        for name, ticket in run["tickets"].items():
            table = client.do_get(flight.Ticket(ticket.encode()), options=options).read_all()
            sections[name] = table.to_pylist()  # suppressed cells are null, with <metric>_suppressed = true
        print(json.dumps({"run_id": run["run"]["run_id"], "sections": sections}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
