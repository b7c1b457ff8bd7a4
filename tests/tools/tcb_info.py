#!/usr/bin/env python3
"""Reads the TCG DICE TcbInfo extension (OID 2.23.133.5.4.1) of a PEM certificate, with
Python's cryptography for the X.509 and pyasn1 for the extension, and prints it as JSON.

An independent check of what oxroot writes: the schema below is typed in from the TCG DICE
Attestation Architecture (version 1.1, section 6.1.1), not derived from oxroot's encoder.

    python3 tcb_info.py CERT.pem
    {"critical": false, "fwids": [{"hash_alg": "2.16.840.1.101.3.4.2.1", "digest": "ab…"}],
     "other_fields": []}

Exit code 1 if the certificate has no TcbInfo extension.
"""
import json
import sys

from cryptography import x509
from cryptography.x509.oid import ObjectIdentifier
from pyasn1.codec.der import decoder
from pyasn1.type import char, namedtype, tag, univ

TCB_INFO_OID = ObjectIdentifier("2.23.133.5.4.1")


def implicit(number, asn1_type, constructed=False):
    form = tag.tagFormatConstructed if constructed else tag.tagFormatSimple
    return asn1_type.subtype(implicitTag=tag.Tag(tag.tagClassContext, form, number))


class Fwid(univ.Sequence):
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("hashAlg", univ.ObjectIdentifier()),
        namedtype.NamedType("digest", univ.OctetString()),
    )


class FwidList(univ.SequenceOf):
    componentType = Fwid()


class OperationalFlags(univ.BitString):
    pass


class DiceTcbInfo(univ.Sequence):
    componentType = namedtype.NamedTypes(
        namedtype.OptionalNamedType("vendor", implicit(0, char.UTF8String())),
        namedtype.OptionalNamedType("model", implicit(1, char.UTF8String())),
        namedtype.OptionalNamedType("version", implicit(2, char.UTF8String())),
        namedtype.OptionalNamedType("svn", implicit(3, univ.Integer())),
        namedtype.OptionalNamedType("layer", implicit(4, univ.Integer())),
        namedtype.OptionalNamedType("index", implicit(5, univ.Integer())),
        namedtype.OptionalNamedType("fwids", implicit(6, FwidList(), constructed=True)),
        namedtype.OptionalNamedType("flags", implicit(7, OperationalFlags())),
        namedtype.OptionalNamedType("vendorInfo", implicit(8, univ.OctetString())),
        namedtype.OptionalNamedType("type", implicit(9, univ.OctetString())),
    )


def main(path):
    with open(path, "rb") as handle:
        cert = x509.load_pem_x509_certificate(handle.read())
    try:
        extension = cert.extensions.get_extension_for_oid(TCB_INFO_OID)
    except x509.ExtensionNotFound:
        print("no TcbInfo extension", file=sys.stderr)
        return 1
    der = extension.value.value
    info, rest = decoder.decode(der, asn1Spec=DiceTcbInfo())
    if rest:
        raise ValueError(f"{len(rest)} bytes after the TcbInfo")
    fwids = [
        {"hash_alg": str(fwid["hashAlg"]), "digest": bytes(fwid["digest"]).hex()}
        for fwid in info["fwids"]
    ]
    other = [
        name for name in info.keys() if name != "fwids" and info[name].isValue
    ]
    print(json.dumps({"critical": extension.critical, "fwids": fwids, "other_fields": other}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
