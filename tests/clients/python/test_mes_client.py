"""End-to-end test of the Python MES client against the real service and real device agents.

Run by `tests/clients/python/run`, which makes the virtualenv, generates the stubs and points
OXROOT_BIN_DIR at the built `enroll-service` and `device-agent` binaries. Everything listens on
127.0.0.1 only, and every process this test starts is stopped when it ends, however it ends.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import unittest
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from oxroot.v1 import operator_pb2 as pb
from oxroot.v1 import operator_pb2_grpc as pb_grpc
from oxroot_mes import MesClient, OperatorCredentials, read_quarklink_devices

# The stock packages this client is written against (pinned in requirements.txt).
STOCK_PACKAGES = (
    "grpcio",
    "grpcio-tools",
    "grpcio-reflection",
    "grpcio-health-checking",
    "protobuf",
    "cryptography",
)
DEVICES = 3
# Bounds on everything that waits, so that a broken build fails instead of hanging CI.
PROCESS_TIMEOUT = 120.0
WATCH_DEADLINE = 300.0
PASSPHRASE = "python mes client test passphrase"


def bin_dir() -> Path:
    directory = os.environ.get("OXROOT_BIN_DIR")
    if not directory:
        raise RuntimeError("set OXROOT_BIN_DIR to the directory of the built binaries")
    return Path(directory)


class EnrollmentService:
    """`enroll-service init` and `serve` on a temporary state directory, on 127.0.0.1."""

    def __init__(self, state_dir: Path, log_path: Path) -> None:
        self.state_dir = state_dir
        self.log_path = log_path
        self.env = dict(os.environ, OXROOT_CA_PASSPHRASE=PASSPHRASE)
        self.process: subprocess.Popen[str] | None = None
        self.target = ""

    def start(self) -> None:
        subprocess.run(
            [bin_dir() / "enroll-service", "init", "--state-dir", self.state_dir],
            env=self.env,
            check=True,
            capture_output=True,
            timeout=PROCESS_TIMEOUT,
        )
        with self.log_path.open("w") as log:
            # Port 0 for both listeners: the service prints the address it got.
            self.process = subprocess.Popen(
                [
                    bin_dir() / "enroll-service",
                    "serve",
                    "--state-dir",
                    self.state_dir,
                    "--listen",
                    "127.0.0.1:0",
                    "--metrics-listen",
                    "127.0.0.1:0",
                ],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        lines: queue.Queue[str] = queue.Queue()
        stdout = self.process.stdout
        assert stdout is not None

        def drain() -> None:
            for line in stdout:
                lines.put(line)
            lines.put("")

        threading.Thread(target=drain, daemon=True).start()
        while True:
            try:
                line = lines.get(timeout=PROCESS_TIMEOUT)
            except queue.Empty:
                raise RuntimeError(f"the service did not start listening: {self.log()}") from None
            if not line:
                raise RuntimeError(f"the service exited: {self.log()}")
            if line.startswith("listening on ") and line.rstrip().endswith("(TLS)"):
                self.target = line.split()[2]
                return

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@dataclass
class Device:
    """One emulated chip and its device agent's state directory."""

    state_dir: Path
    silicon_file: Path
    device_id: str = ""

    def agent(self, *args: str, service: EnrollmentService | None = None) -> str:
        """Runs `device-agent --state DIR ARGS`; returns stdout, raises with stderr."""
        command: list[str | Path] = [bin_dir() / "device-agent", "--state", self.state_dir, *args]
        if args and args[0] != "make-chip":
            command += ["--silicon", f"file:{self.silicon_file}"]
        if service is not None:
            command += [
                "--service",
                f"https://{service.target}",
                "--ca",
                service.state_dir / "ca" / "root.pem",
            ]
        run = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=PROCESS_TIMEOUT,
        )
        if run.returncode != 0:
            raise RuntimeError(
                f"device-agent {' '.join(args)} exited {run.returncode}: {run.stderr}"
            )
        return run.stdout

    def manufacture(self) -> None:
        """What the programming house does: make the chip, enrol its PUF, read its DeviceId."""
        self.agent("make-chip", "--out", str(self.silicon_file))
        self.agent("enroll")
        self.device_id = self.agent("id").strip()

    def bring_up(self, service: EnrollmentService) -> None:
        """What the device does on the line: register, then onboard."""
        self.agent("register", service=service)
        self.agent("onboard", service=service)


def issue_operator(
    platform: MesClient, *, name: str, owner: str, role: pb.Role
) -> tuple[OperatorCredentials, x509.Certificate]:
    """A new operator key, certified by the service from a CSR; returns the credentials and the
    issuing intermediate (which signs the CRL too)."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .sign(key, hashes.SHA256())
    )
    issued = platform.issue_operator_certificate(
        csr_pem=csr.public_bytes(serialization.Encoding.PEM).decode(),
        name=name,
        role=role,
        owner=owner,
        validity_seconds=3600,
    )
    credentials = OperatorCredentials(
        root_pem=issued.root_pem.encode(),
        certificate_chain_pem="".join([issued.certificate_pem, *issued.intermediate_pems]).encode(),
        private_key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    return credentials, x509.load_pem_x509_certificate(issued.intermediate_pems[0].encode())


class MesClientTest(unittest.TestCase):
    workdir: ClassVar[Path]
    service: ClassVar[EnrollmentService]
    platform: ClassVar[MesClient]

    @classmethod
    def setUpClass(cls) -> None:
        versions = ", ".join(f"{p} {importlib.metadata.version(p)}" for p in STOCK_PACKAGES)
        print(f"stock packages: {versions} (Python {sys.version.split()[0]})", file=sys.stderr)
        temporary = tempfile.TemporaryDirectory(prefix="oxroot-mes-")
        cls.addClassCleanup(temporary.cleanup)
        cls.workdir = Path(temporary.name)
        cls.service = EnrollmentService(cls.workdir / "oxs", cls.workdir / "service.log")
        cls.addClassCleanup(cls.service.stop)
        cls.service.start()
        # The platform admin that `init` wrote: an enrollctl profile directory.
        cls.platform = MesClient(
            cls.service.target, OperatorCredentials.from_profile(cls.service.state_dir / "admin")
        )
        cls.addClassCleanup(cls.platform.close)

    def operator(self, name: str, owner: str) -> tuple[MesClient, x509.Certificate]:
        credentials, intermediate = issue_operator(
            self.platform, name=name, owner=owner, role=pb.ROLE_ADMIN
        )
        client = MesClient(self.service.target, credentials)
        self.addCleanup(client.close)
        return client, intermediate

    def test_health_answers_serving_for_both_services(self) -> None:
        health = health_pb2_grpc.HealthStub(self.platform.channel)
        for service in ("oxroot.v1.DeviceEnrollment", "oxroot.v1.Operator"):
            response = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            self.assertEqual(response.status, health_pb2.HealthCheckResponse.SERVING, service)

    def test_reflection_lists_and_describes_both_services(self) -> None:
        # grpcio-reflection's client speaks v1alpha; the service serves it next to v1.
        database = ProtoReflectionDescriptorDatabase(self.platform.channel)
        services = database.get_services()
        self.assertIn("oxroot.v1.Operator", services)
        self.assertIn("oxroot.v1.DeviceEnrollment", services)
        # A stock tool can discover the whole contract, without our .proto files.
        pool = descriptor_pool.DescriptorPool(database)
        import_devices = pool.FindServiceByName("oxroot.v1.Operator").FindMethodByName(
            "ImportDevices"
        )
        self.assertTrue(import_devices.client_streaming)
        self.assertEqual(import_devices.input_type.full_name, "oxroot.v1.ImportDevicesRequest")

    def test_a_client_without_an_operator_certificate_is_refused(self) -> None:
        root = (self.service.state_dir / "ca" / "root.pem").read_bytes()
        # TLS that pins the service's root, but no client certificate.
        credentials = grpc.ssl_channel_credentials(root_certificates=root)
        with grpc.secure_channel(self.service.target, credentials) as channel:
            with self.assertRaises(grpc.RpcError) as refused:
                pb_grpc.OperatorStub(channel).WhoAmI(pb.WhoAmIRequest(), timeout=10)
        self.assertEqual(refused.exception.code(), grpc.StatusCode.UNAUTHENTICATED)

    def test_a_revoked_operator_is_refused_and_on_the_crl(self) -> None:
        lost, intermediate = self.operator("mes-line-lost", "acme")
        serial = lost.whoami().certificate_serial
        listed = {c.serial: c for c in self.platform.list_operator_certificates(owner="acme")}
        self.assertEqual(listed[serial].name, "mes-line-lost")
        self.assertFalse(listed[serial].HasField("revocation"))

        revoked = self.platform.revoke_operator_certificate(serial, comment="station stolen")
        self.assertEqual(revoked.revocation.reason, pb.REVOCATION_REASON_KEY_COMPROMISE)
        # The same channel, opened before the revocation: its next call is refused.
        with self.assertRaises(grpc.RpcError) as refused:
            lost.whoami()
        self.assertEqual(refused.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
        self.assertIn("revoked", refused.exception.details())

        # Operator certificates are the platform CA's: its CRL lists them.
        crl = x509.load_der_x509_crl(self.platform.get_crl_der(owner="*"))
        public_key = intermediate.public_key()
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        self.assertTrue(crl.is_signature_valid(public_key))
        self.assertIsNotNone(crl.get_revoked_certificate_by_serial_number(int(serial, 16)))

    def test_mes_flow_policy_import_watch_list_revoke_crl(self) -> None:
        mes, _ = self.operator("mes-line-1", "acme")
        # The owner's own issuing CA signs its devices' certificates and CRL.
        owner = mes.get_owner()
        self.assertEqual(owner.name, "acme")
        self.assertEqual(owner.issuing_cas[0].state, pb.ISSUING_CA_STATE_ACTIVE)
        intermediate = x509.load_pem_x509_certificate(
            owner.issuing_cas[0].certificate_pem.encode()
        )
        whoami = mes.whoami()
        self.assertEqual(
            (whoami.name, whoami.owner, whoami.role), ("mes-line-1", "acme", pb.ROLE_ADMIN)
        )

        # 1. A policy and a batch.
        policy = mes.create_mosquitto_policy("line-broker", host="127.0.0.1", port=8883)
        self.assertEqual(policy.owner, "acme")
        batch = mes.create_batch("line-1 lot 42", policy.name, request_id="lot-42")

        # 2. The programming house's QuarkLink-style file, imported through the client stream.
        devices = [
            Device(self.workdir / f"dev{n}", self.workdir / f"chip{n}.bin") for n in range(DEVICES)
        ]
        for device in devices:
            device.manufacture()
        quarklink = self.workdir / "devices.json"
        quarklink.write_text(json.dumps({"devices": [{"device_id": d.device_id} for d in devices]}))
        device_ids = read_quarklink_devices(quarklink)
        imported = mes.import_devices(batch.batch_id, device_ids)
        self.assertEqual(imported.report.accepted, DEVICES, imported.report)
        self.assertEqual(imported.report.rejected, 0, imported.report)
        self.assertEqual(imported.counts.awaiting_registration, DEVICES)

        # 3. Watch the batch while the devices register and onboard (real device-agent
        #    processes, in parallel), until the service says the batch is settled.
        watch = mes.watch_batch(batch.batch_id, deadline_seconds=WATCH_DEADLINE)
        snapshot = next(watch)
        self.assertEqual(snapshot.WhichOneof("event"), "progress")
        self.assertEqual(snapshot.progress.counts.awaiting_registration, DEVICES)
        serials: dict[str, str] = {}
        last = snapshot.progress

        def stop_watching_if_failed(agent: Future[None]) -> None:
            # A failed agent would leave the batch unsettled for good: stop watching at once.
            if agent.exception() is not None:
                watch.cancel()

        with ThreadPoolExecutor(max_workers=DEVICES) as pool:
            agents: list[Future[None]] = []
            for device in devices:
                agent = pool.submit(device.bring_up, self.service)
                agent.add_done_callback(stop_watching_if_failed)
                agents.append(agent)
            try:
                for message in watch:
                    if message.WhichOneof("event") == "progress":
                        last = message.progress
                    elif message.device.kind == pb.DEVICE_EVENT_KIND_ONBOARDED:
                        serials[message.device.device_id] = message.device.serial
            finally:
                for agent in agents:
                    agent.result()  # an agent's own error explains a cancelled watch best
        self.assertEqual(last.counts.onboarded, DEVICES, last)
        self.assertEqual(last.dropped_events, 0)
        self.assertEqual(sorted(serials), sorted(device_ids))

        # 4. List the batch's devices: every one holds the credential the watch announced.
        listed = mes.list_devices(batch_id=batch.batch_id)
        self.assertEqual([d.device_id for d in listed], sorted(device_ids))
        for entry in listed:
            self.assertEqual(entry.state, pb.DEVICE_STATE_ONBOARDED, entry.device_id)
            self.assertEqual(entry.current_credential.serial, serials[entry.device_id])

        # 5. Revoke one device.
        victim = devices[0].device_id
        revoked = mes.revoke_device(victim, comment="returned from the field")
        self.assertEqual(list(revoked.revoked_serials), [serials[victim]])
        self.assertEqual(revoked.device.state, pb.DEVICE_STATE_REVOKED)

        # 6. The CRL, checked with `cryptography`: signed by the issuing CA, listing the
        #    revoked serial and no other device's.
        crl = x509.load_der_x509_crl(mes.get_crl_der())
        self.assertEqual(crl.issuer, intermediate.subject)
        public_key = intermediate.public_key()
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        self.assertTrue(crl.is_signature_valid(public_key))
        leaf = x509.load_pem_x509_certificate(
            mes.get_device(victim).credential_history[0].certificate_pem.encode()
        )
        self.assertEqual(leaf.serial_number, int(serials[victim], 16))
        self.assertIsNotNone(crl.get_revoked_certificate_by_serial_number(leaf.serial_number))
        for device_id, serial in serials.items():
            if device_id != victim:
                self.assertIsNone(crl.get_revoked_certificate_by_serial_number(int(serial, 16)))

        # 7. Another owner's operator sees none of it.
        other, _ = self.operator("mes-globex", "globex")
        self.assertEqual(other.whoami().owner, "globex")
        self.assertEqual(other.list_batches(), [])
        self.assertEqual(other.list_devices(), [])
        # A filter on another owner's batch is a filter like any other: it matches nothing.
        self.assertEqual(other.list_devices(batch_id=batch.batch_id), [])
        self.assert_not_found(lambda: other.get_batch(batch.batch_id))
        self.assert_not_found(lambda: next(other.watch_batch(batch.batch_id)))
        self.assert_not_found(lambda: other.get_device(victim))
        self.assert_not_found(lambda: other.get_owner("acme"))
        # ...and its own root is not acme's: its trust accepts none of acme's devices.
        self.assertNotEqual(other.get_owner().root_pem, owner.root_pem)
        self.assert_not_found(lambda: other.revoke_device(devices[1].device_id))
        self.assert_not_found(lambda: other.import_devices(batch.batch_id, device_ids))
        # ...and nothing changed for the owner.
        self.assertEqual(mes.get_batch(batch.batch_id).counts.onboarded, DEVICES - 1)

    def assert_not_found(self, call: Callable[[], object]) -> None:
        with self.assertRaises(grpc.RpcError) as refused:
            call()
        self.assertEqual(refused.exception.code(), grpc.StatusCode.NOT_FOUND)


if __name__ == "__main__":
    unittest.main(verbosity=2)
