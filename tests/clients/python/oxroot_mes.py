"""A factory MES client for the oxroot enrolment service, on stock gRPC only.

Everything here uses `grpcio` and the stubs that `grpcio-tools` generates from the service's
`.proto` files; nothing comes from oxroot's own code. Generate the stubs once per release of
the contract:

    python -m grpc_tools.protoc -I proto --python_out=gen --grpc_python_out=gen \
        --pyi_out=gen proto/oxroot/v1/*.proto

and put `gen/` on `sys.path` (the generated modules import each other as `oxroot.v1.*`).

Authentication is mutual TLS: the MES presents an operator certificate that the service issued
(`enrollctl operator issue`, or `issue_operator_certificate` below) and trusts the service's root
CA only, never the system trust store. The operator's owner decides what it sees: another
owner's policies, batches and devices answer NOT_FOUND.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol

import grpc
from google.protobuf import duration_pb2

from oxroot.v1 import operator_pb2 as pb
from oxroot.v1 import operator_pb2_grpc as pb_grpc

# The service takes at most 1,000 records per ImportChunk (and 100,000 per call).
IMPORT_CHUNK_RECORDS = 1000

# Keys under which a QuarkLink device object carries its DeviceId, as enrollctl reads them.
_DEVICE_ID_KEYS = ("device_id", "deviceId", "id")


@dataclass(frozen=True)
class OperatorCredentials:
    """What a client needs for mutual TLS with the service (all PEM)."""

    # The service's root CA: the only certificate the client trusts for the server.
    root_pem: bytes
    # The operator certificate, then the issuing intermediate.
    certificate_chain_pem: bytes
    # The operator's private key (PKCS#8).
    private_key_pem: bytes

    @classmethod
    def from_profile(cls, directory: Path) -> OperatorCredentials:
        """Reads an enrollctl profile directory: root.pem, operator.pem and operator.key."""
        return cls(
            root_pem=(directory / "root.pem").read_bytes(),
            certificate_chain_pem=(directory / "operator.pem").read_bytes(),
            private_key_pem=(directory / "operator.key").read_bytes(),
        )


def read_quarklink_devices(path: Path) -> list[str]:
    """The DeviceIds of a QuarkLink-style `{"devices": [...]}` file.

    Each element is a DeviceId string or an object carrying one under `device_id`, `deviceId`
    or `id`. The service decides what a valid DeviceId is: values are passed on as they are.
    """
    document = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(document, dict) or not isinstance(document.get("devices"), list):
        raise ValueError(f'{path}: expected a JSON object {{"devices": [...]}}')
    device_ids: list[str] = []
    for index, element in enumerate(document["devices"], start=1):
        if isinstance(element, str):
            device_ids.append(element.strip())
            continue
        if isinstance(element, dict):
            value = next((element[k] for k in _DEVICE_ID_KEYS if k in element), None)
            if isinstance(value, str):
                device_ids.append(value.strip())
                continue
        raise ValueError(f"{path}: device {index} has no DeviceId")
    return device_ids


def _import_requests(batch_id: str, device_ids: Iterable[str]) -> Iterator[pb.ImportDevicesRequest]:
    """The ImportDevices client stream: a header naming the batch, then chunks of records.

    Line numbers are the devices' positions in the file, so that the service's rejections
    point at the right element.
    """
    yield pb.ImportDevicesRequest(header=pb.ImportHeader(batch_id=batch_id))
    chunk: list[pb.ImportRecord] = []
    for line, device_id in enumerate(device_ids, start=1):
        chunk.append(pb.ImportRecord(line=line, device_id=device_id))
        if len(chunk) == IMPORT_CHUNK_RECORDS:
            yield pb.ImportDevicesRequest(chunk=pb.ImportChunk(records=chunk))
            chunk = []
    if chunk:
        yield pb.ImportDevicesRequest(chunk=pb.ImportChunk(records=chunk))


class BatchWatch(Protocol):
    """A WatchBatch stream: iterate it for messages, cancel it to stop early."""

    def __iter__(self) -> Iterator[pb.WatchBatchResponse]: ...

    def __next__(self) -> pb.WatchBatchResponse: ...

    def cancel(self) -> bool: ...


class MesClient:
    """The Operator API calls a production line needs, with their paging done."""

    def __init__(
        self,
        target: str,
        credentials: OperatorCredentials,
        *,
        timeout: float = 30.0,
    ) -> None:
        """Connects to `target` ("host:port") with `credentials`.

        `timeout` is the deadline of every unary call, in seconds.
        """
        channel_credentials = grpc.ssl_channel_credentials(
            root_certificates=credentials.root_pem,
            private_key=credentials.private_key_pem,
            certificate_chain=credentials.certificate_chain_pem,
        )
        self.channel = grpc.secure_channel(target, channel_credentials)
        self.stub = pb_grpc.OperatorStub(self.channel)
        self.timeout = timeout

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> MesClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def whoami(self) -> pb.WhoAmIResponse:
        """The caller as the service sees it: name, owner, role."""
        return self.stub.WhoAmI(pb.WhoAmIRequest(), timeout=self.timeout)

    def create_mosquitto_policy(
        self,
        name: str,
        *,
        host: str,
        port: int = 8883,
        certificate_lifetime_days: int = 365,
        owner: str = "",
    ) -> pb.Policy:
        """Creates a policy for a Mosquitto broker (ROLE_ADMIN). Policies are immutable."""
        policy = pb.Policy(
            name=name,
            owner=owner,
            certificate_lifetime=duration_pb2.Duration(seconds=certificate_lifetime_days * 86400),
            mosquitto=pb.MosquittoPolicyParams(host=host, port=port),
        )
        response = self.stub.CreatePolicy(
            pb.CreatePolicyRequest(policy=policy), timeout=self.timeout
        )
        return response.policy

    def create_batch(self, name: str, policy_name: str, *, request_id: str = "") -> pb.Batch:
        """Creates an empty batch under a policy. With `request_id`, a retry returns the batch
        the first attempt created instead of a second one."""
        request = pb.CreateBatchRequest(name=name, policy_name=policy_name, request_id=request_id)
        return self.stub.CreateBatch(request, timeout=self.timeout).batch

    def import_devices(self, batch_id: str, device_ids: Iterable[str]) -> pb.ImportDevicesResponse:
        """Adds devices to a batch through the ImportDevices client stream.

        Every record is accepted or rejected on its own; look at `report.rejections`. An
        interrupted import can simply be repeated: devices already in the batch count as
        unchanged.
        """
        return self.stub.ImportDevices(_import_requests(batch_id, device_ids), timeout=self.timeout)

    def get_batch(self, batch_id: str) -> pb.Batch:
        return self.stub.GetBatch(pb.GetBatchRequest(batch_id=batch_id), timeout=self.timeout).batch

    def list_batches(self) -> list[pb.Batch]:
        """All batches the caller may see, newest first."""
        batches: list[pb.Batch] = []
        token = ""
        while True:
            page = self.stub.ListBatches(
                pb.ListBatchesRequest(page_token=token), timeout=self.timeout
            )
            batches.extend(page.batches)
            token = page.next_page_token
            if not token:
                return batches

    def watch_batch(
        self,
        batch_id: str,
        *,
        device_events: bool = True,
        until_settled: bool = True,
        deadline_seconds: float = 600.0,
    ) -> BatchWatch:
        """Follows a batch: a progress snapshot first, then progress and device events.

        With `until_settled` the stream ends once no device of the batch waits to register or
        onboard. The deadline bounds the whole stream; cancel it early with `.cancel()` on the
        returned stream.
        """
        request = pb.WatchBatchRequest(
            batch_id=batch_id, device_events=device_events, until_settled=until_settled
        )
        return self.stub.WatchBatch(request, timeout=deadline_seconds)

    def list_devices(
        self, *, batch_id: str = "", state: pb.DeviceState = pb.DEVICE_STATE_UNSPECIFIED
    ) -> list[pb.Device]:
        """All devices matching the filters, ordered by DeviceId (every page)."""
        devices: list[pb.Device] = []
        token = ""
        while True:
            request = pb.ListDevicesRequest(batch_id=batch_id, state=state, page_token=token)
            page = self.stub.ListDevices(request, timeout=self.timeout)
            devices.extend(page.devices)
            token = page.next_page_token
            if not token:
                return devices

    def get_device(self, device_id: str) -> pb.Device:
        """One device with its credential history."""
        request = pb.GetDeviceRequest(device_id=device_id)
        return self.stub.GetDevice(request, timeout=self.timeout).device

    def revoke_device(
        self,
        device_id: str,
        *,
        reason: pb.RevocationReason = pb.REVOCATION_REASON_KEY_COMPROMISE,
        comment: str = "",
    ) -> pb.RevokeDeviceResponse:
        """Revokes a device (final): its certificates go on the CRL at once."""
        request = pb.RevokeDeviceRequest(device_id=device_id, reason=reason, comment=comment)
        return self.stub.RevokeDevice(request, timeout=self.timeout)

    def get_crl_der(self, *, owner: str = "", issuer_id: str = "") -> bytes:
        """One issuing CA's current CRL, DER-encoded: the caller's owner's active one by
        default, the platform's (operator certificates) for owner "*"."""
        request = pb.GetCrlRequest(format=pb.CRL_FORMAT_DER, owner=owner, issuer_id=issuer_id)
        return self.stub.GetCrl(request, timeout=self.timeout).crl

    def get_owner(self, name: str = "") -> pb.Owner:
        """An owner and its CAs (the caller's own by default)."""
        request = pb.GetOwnerRequest(name=name)
        return self.stub.GetOwner(request, timeout=self.timeout).owner

    def issue_operator_certificate(
        self,
        *,
        csr_pem: str,
        name: str,
        role: pb.Role,
        owner: str,
        validity_seconds: int,
    ) -> pb.IssueOperatorCertificateResponse:
        """Certifies another operator's key (ROLE_ADMIN). The key stays with its owner: only
        the CSR travels."""
        request = pb.IssueOperatorCertificateRequest(
            csr_pem=csr_pem,
            name=name,
            role=role,
            owner=owner,
            validity=duration_pb2.Duration(seconds=validity_seconds),
        )
        return self.stub.IssueOperatorCertificate(request, timeout=self.timeout)

    def list_operator_certificates(self, *, owner: str = "") -> list[pb.OperatorCertificate]:
        """Every operator certificate the service issued for the owner (ROLE_ADMIN), all pages,
        revoked ones included."""
        certificates: list[pb.OperatorCertificate] = []
        page_token = ""
        while True:
            request = pb.ListOperatorCertificatesRequest(owner=owner, page_token=page_token)
            page = self.stub.ListOperatorCertificates(request, timeout=self.timeout)
            certificates.extend(page.certificates)
            if not page.next_page_token:
                return certificates
            page_token = page.next_page_token

    def revoke_operator_certificate(
        self,
        serial: str,
        *,
        reason: pb.RevocationReason = pb.REVOCATION_REASON_KEY_COMPROMISE,
        comment: str = "",
    ) -> pb.OperatorCertificate:
        """Revokes another operator's certificate (ROLE_ADMIN): its next call is refused
        UNAUTHENTICATED, and its serial goes on the CRL."""
        request = pb.RevokeOperatorCertificateRequest(serial=serial, reason=reason, comment=comment)
        return self.stub.RevokeOperatorCertificate(request, timeout=self.timeout).certificate
