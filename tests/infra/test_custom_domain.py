"""A custom domain on the component: the regional domain name, the stage's mapping, the
certificate (given, or requested and validated through Route 53), the alias record, the URL
clients use, and the management endpoint the functions keep (execute-api)."""

from __future__ import annotations

from typing import Any

import pytest

from components import RealtimeChannelTransforms
from tests.infra.harness import ACCOUNT, REGION, RecordingMocks, run, run_main
from tests.infra.test_component import channel_program

DOMAIN = "realtime.example.com"
ZONE = "Z0123456789ABCDEFGHIJ"
CERTIFICATE = f"arn:aws:acm:{REGION}:{ACCOUNT}:certificate/0f1e2d3c-aaaa-bbbb-cccc-0123456789ab"
DOMAIN_NAME = "aws:apigatewayv2/domainName:DomainName"
API_MAPPING = "aws:apigatewayv2/apiMapping:ApiMapping"
CERT = "aws:acm/certificate:Certificate"
CERT_VALIDATION = "aws:acm/certificateValidation:CertificateValidation"
RECORD = "aws:route53/record:Record"
FUNCTION = "aws:lambda/function:Function"
DOMAIN_TYPES = (DOMAIN_NAME, API_MAPPING, CERT, CERT_VALIDATION, RECORD)


def declare(**changes: Any) -> tuple[RecordingMocks, dict[str, Any]]:
    captured: dict[str, Any] = {}
    program = channel_program(captured=captured, **changes)
    extra = ("execute_api_url", "custom_domain_target")

    def with_domain_outputs() -> None:
        program()
        channel = captured["channel"]
        for attribute in extra:
            getattr(channel, attribute).apply(
                lambda value, a=attribute: captured.__setitem__(a, value)
            )

    return run(with_domain_outputs), captured


def test_without_a_custom_domain_nothing_is_declared_and_url_is_execute_api() -> None:
    mocks, captured = declare()
    assert [r.type for r in mocks.resources if r.type in DOMAIN_TYPES] == []
    assert captured["url"] == captured["execute_api_url"]
    assert captured["url"].startswith("wss://") and ".execute-api." in captured["url"]
    assert captured["custom_domain_target"] == ""


@pytest.fixture(scope="module")
def zone_and_certificate() -> tuple[RecordingMocks, dict[str, Any]]:
    return declare(custom_domain=DOMAIN, certificate_arn=CERTIFICATE, hosted_zone_id=ZONE)


def test_a_regional_tls12_domain_name_with_the_given_certificate(
    zone_and_certificate: tuple[RecordingMocks, dict[str, Any]],
) -> None:
    mocks, _ = zone_and_certificate
    domain = mocks.one(DOMAIN_NAME)
    assert domain.name == "chat-domain"
    assert domain.inputs["domainName"] == DOMAIN
    assert domain.inputs["domainNameConfiguration"] == {
        "certificateArn": CERTIFICATE,
        "endpointType": "REGIONAL",
        "securityPolicy": "TLS_1_2",
    }
    assert domain.inputs["tags"]["realtime-channel"] == "chat"
    assert not mocks.of_type(CERT) and not mocks.of_type(CERT_VALIDATION)


def test_the_stage_is_mapped_at_the_domains_root(
    zone_and_certificate: tuple[RecordingMocks, dict[str, Any]],
) -> None:
    mocks, _ = zone_and_certificate
    mapping = mocks.one(API_MAPPING)
    assert mapping.inputs["apiId"] == mocks.one("aws:apigatewayv2/api:Api").id
    assert mapping.inputs["stage"] == mocks.one("aws:apigatewayv2/stage:Stage").outputs["name"]
    assert mapping.inputs["domainName"] == DOMAIN
    assert "apiMappingKey" not in mapping.inputs


def test_the_alias_record_points_at_the_domains_regional_target(
    zone_and_certificate: tuple[RecordingMocks, dict[str, Any]],
) -> None:
    mocks, captured = zone_and_certificate
    configuration = mocks.one(DOMAIN_NAME).outputs["domainNameConfiguration"]
    (record,) = mocks.of_type(RECORD)
    assert record.name == "chat-domain-alias"
    assert record.inputs["zoneId"] == ZONE
    assert record.inputs["name"] == DOMAIN
    assert record.inputs["type"] == "A"
    assert record.inputs["aliases"] == [
        {
            "name": configuration["targetDomainName"],
            "zoneId": configuration["hostedZoneId"],
            "evaluateTargetHealth": False,
        }
    ]
    assert captured["custom_domain_target"] == configuration["targetDomainName"]


def test_clients_get_the_custom_domain_and_functions_keep_execute_api(
    zone_and_certificate: tuple[RecordingMocks, dict[str, Any]],
) -> None:
    mocks, captured = zone_and_certificate
    assert captured["url"] == f"wss://{DOMAIN}"
    assert ".execute-api." in captured["execute_api_url"]
    assert captured["management_endpoint"] == "https://" + captured["execute_api_url"].removeprefix(
        "wss://"
    )
    endpoints = {
        f.name: f.inputs["environment"]["variables"].get("MANAGEMENT_ENDPOINT")
        for f in mocks.of_type(FUNCTION)
    }
    used = {name: endpoint for name, endpoint in endpoints.items() if endpoint}
    assert used  # the functions that post have one
    assert set(used.values()) == {captured["management_endpoint"]}


def test_a_zone_without_a_certificate_requests_one_and_validates_it_by_dns() -> None:
    mocks, _ = declare(custom_domain=DOMAIN, hosted_zone_id=ZONE)
    certificate = mocks.one(CERT)
    assert certificate.inputs["domainName"] == DOMAIN
    assert certificate.inputs["validationMethod"] == "DNS"
    (option,) = certificate.outputs["domainValidationOptions"]
    validation_record = mocks.named("chat-certificate-validation")
    assert validation_record.inputs["zoneId"] == ZONE
    assert validation_record.inputs["name"] == option["resourceRecordName"]
    assert validation_record.inputs["type"] == option["resourceRecordType"]
    assert validation_record.inputs["records"] == [option["resourceRecordValue"]]
    validation = mocks.one(CERT_VALIDATION)
    assert validation.inputs["certificateArn"] == certificate.outputs["arn"]
    assert validation.inputs["validationRecordFqdns"] == [validation_record.outputs["fqdn"]]
    configuration = mocks.one(DOMAIN_NAME).inputs["domainNameConfiguration"]
    assert configuration["certificateArn"] == certificate.outputs["arn"]
    assert {r.name for r in mocks.of_type(RECORD)} == {
        "chat-certificate-validation",
        "chat-domain-alias",
    }


def test_a_certificate_without_a_zone_declares_no_record_and_exports_the_target() -> None:
    mocks, captured = declare(custom_domain=DOMAIN, certificate_arn=CERTIFICATE)
    assert not mocks.of_type(RECORD)
    target = mocks.one(DOMAIN_NAME).outputs["domainNameConfiguration"]["targetDomainName"]
    assert captured["custom_domain_target"] == target
    assert target.endswith(f".execute-api.{REGION}.amazonaws.com")


def test_a_mapping_path_is_the_mapping_key_and_in_the_url() -> None:
    mocks, captured = declare(
        custom_domain=DOMAIN, certificate_arn=CERTIFICATE, custom_domain_path="live"
    )
    assert mocks.one(API_MAPPING).inputs["apiMappingKey"] == "live"
    assert captured["url"] == f"wss://{DOMAIN}/live"


def test_transforms_reach_the_domain_its_mapping_certificate_and_records() -> None:
    seen: list[str] = []

    def tag(kind: str) -> Any:
        def hook(*arguments: Any) -> None:
            seen.append(":".join([kind, *[a for a in arguments if isinstance(a, str)]]))

        return hook

    transforms = RealtimeChannelTransforms(
        domain_name=tag("domain"),
        api_mapping=tag("mapping"),
        certificate=tag("certificate"),
        dns_record=tag("record"),
    )
    declare(custom_domain=DOMAIN, hosted_zone_id=ZONE, transforms=transforms)
    assert sorted(seen) == [
        "certificate",
        "domain",
        "mapping",
        "record:alias",
        "record:validation",
    ]


@pytest.mark.parametrize(
    ("changes", "argument", "why"),
    [
        ({"custom_domain": "https://realtime.example.com"}, "custom_domain", "fully qualified"),
        ({"custom_domain": "Realtime.Example.com"}, "custom_domain", "lower case"),
        ({"custom_domain": "*.example.com"}, "custom_domain", "wildcard"),
        ({"custom_domain": "realtime.example.com."}, "custom_domain", "trailing dot"),
        ({"custom_domain": "localhost"}, "custom_domain", "fully qualified"),
        ({"custom_domain": "a..example.com"}, "custom_domain", "fully qualified"),
        ({"custom_domain": "-a.example.com"}, "custom_domain", "fully qualified"),
        ({"custom_domain": "realtime.example.com:443"}, "custom_domain", "port"),
        ({"custom_domain": DOMAIN}, "custom_domain", "needs certificate_arn"),
        (
            {"custom_domain": DOMAIN, "certificate_arn": "arn:aws:iam::1:server-certificate/x"},
            "certificate_arn",
            "not an ACM certificate ARN",
        ),
        (
            {"custom_domain": DOMAIN, "hosted_zone_id": "example.com"},
            "hosted_zone_id",
            "not a Route 53 hosted zone id",
        ),
        (
            {"custom_domain": DOMAIN, "hosted_zone_id": ZONE, "custom_domain_path": "a/b"},
            "custom_domain_path",
            "one level",
        ),
        ({"hosted_zone_id": ZONE}, "hosted_zone_id", "needs custom_domain"),
        ({"certificate_arn": CERTIFICATE}, "certificate_arn", "needs custom_domain"),
        ({"custom_domain_path": "live"}, "custom_domain_path", "needs custom_domain"),
    ],
)
def test_bad_custom_domain_arguments_fail_at_preview_naming_the_argument(
    changes: dict[str, Any], argument: str, why: str
) -> None:
    mocks = RecordingMocks(preview=True)
    with pytest.raises(ValueError, match=f"'chat': {argument} ") as failure:
        run(channel_program(**changes), preview=True, mocks=mocks)
    assert why in str(failure.value)
    assert not [r for r in mocks.resources if r.type in DOMAIN_TYPES]


def test_a_certificate_from_another_region_is_refused() -> None:
    other = CERTIFICATE.replace(f":{REGION}:", ":eu-west-3:")
    with pytest.raises(ValueError, match="certificate_arn is in eu-west-3") as failure:
        run(
            channel_program(custom_domain=DOMAIN, certificate_arn=other),
            config={"aws:region": REGION},
        )
    assert f"stack's region ({REGION})" in str(failure.value)


def test_the_stack_config_keys_declare_the_domain_and_change_the_exported_url() -> None:
    mocks = run_main(
        "dev",
        overrides={"customDomain": DOMAIN, "hostedZoneId": ZONE, "customDomainPath": "v1"},
    )
    assert mocks.one(DOMAIN_NAME).inputs["domainName"] == DOMAIN
    assert mocks.one(API_MAPPING).inputs["apiMappingKey"] == "v1"
    assert mocks.one(CERT).inputs["domainName"] == DOMAIN


def test_a_bad_custom_domain_in_stack_config_names_the_key() -> None:
    with pytest.raises(ValueError, match=r"realtime-channel:customDomain: .*lower case"):
        run_main("dev", overrides={"customDomain": "Realtime.Example.com", "hostedZoneId": ZONE})


def test_a_preview_declares_the_domain_before_the_certificate_exists() -> None:
    """In a pull-request preview the certificate's validation record is unknown: the program
    still declares everything (nothing waits on values only a deploy knows)."""
    mocks = run_main("dev", preview=True, overrides={"customDomain": DOMAIN, "hostedZoneId": ZONE})
    assert {r.name for r in mocks.resources if r.type in DOMAIN_TYPES} == {
        "realtime-certificate",
        "realtime-certificate-validation",
        "realtime-certificate-valid",
        "realtime-domain",
        "realtime-domain-mapping",
        "realtime-domain-alias",
    }
