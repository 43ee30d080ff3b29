"""Structural checks on the Bicep templates (there is no Bicep compiler here: see docs/deploy.md).

Each test names a property of the deployment the product relies on: identity-only storage, a
Key Vault that cannot lose keys, app settings the code reads, the Flex Consumption shape, the
Event Grid wiring of the snapshot trigger, and the module interfaces a compiler would check.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from lark.exceptions import UnexpectedInput
from pycep import BicepParser

from exporter.settings import APP_SETTING_NAMES

from .conftest import BICEP_FILES, INFRA, Template, body, only, rel, resources, walk

MAIN = "main.bicep"
STORAGE = "core/storage.bicep"
KEYVAULT = "core/keyvault.bicep"
MONITORING = "core/monitoring.bicep"
TOPIC = "core/eventgrid-topic.bicep"
FUNCTION = "app/function.bicep"
ACCESS = "app/access.bicep"
EVENTGRID = "eventgrid.bicep"

# Settings the Flex Consumption plan rejects or manages itself.
FLEX_FORBIDDEN = {
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_EXTENSION_VERSION",
    "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_NODE_DEFAULT_VERSION",
    "SCM_DO_BUILD_DURING_DEPLOYMENT",
    "ENABLE_ORYX_BUILD",
    "AzureWebJobsStorage",  # the connection-string form; only the identity-based __ form is set
}

# Markers of keys or connection strings that must never reach app settings.
SECRET_MARKERS = ("AccountKey=", "DefaultEndpointsProtocol", "SharedAccessSignature", "listKeys(")

GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

BUILT_IN_ROLES = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "ba92f5b4-2d11-453d-a403-e96b0029c9fe": "Storage Blob Data Contributor",
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor",
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": "Storage Table Data Contributor",
    "b86a8fe4-44ce-4948-aee5-eccb2c155cd7": "Key Vault Secrets Officer",
    "4633458b-17de-408a-b874-0445c86b69e6": "Key Vault Secrets User",
    "3913510d-42f4-4e42-8a64-420c390055eb": "Monitoring Metrics Publisher",
}
"""Built-in role definition ids used by the templates, and their names."""


def text(name: str) -> str:
    return (INFRA / name).read_text(encoding="utf-8")


def app_settings(templates: dict[str, Template]) -> dict[str, Any]:
    """The function app's app settings (name -> parsed value), checking the site uses them."""
    function = templates[FUNCTION]
    site = only(function, "Microsoft.Web/sites")
    assert site["properties"]["siteConfig"]["appSettings"] == "appSettings"
    entries = function["variables"]["appSettings"]["value"]
    names = [entry["name"] for entry in entries]
    assert len(names) == len(set(names)), "an app setting is set twice"
    return {entry["name"]: entry["value"] for entry in entries}


# --- Parsing -----------------------------------------------------------------------------------


def test_infra_has_the_expected_templates() -> None:
    found = {rel(path) for path in BICEP_FILES}
    assert {MAIN, STORAGE, KEYVAULT, MONITORING, TOPIC, FUNCTION, ACCESS, EVENTGRID} <= found


@pytest.mark.parametrize("path", BICEP_FILES, ids=rel)
def test_every_template_parses(path: Path) -> None:
    parsed = BicepParser().parse(file_path=path)
    assert parsed.get("resources") or parsed.get("modules"), f"{rel(path)} declares nothing"


def test_the_parser_rejects_a_syntax_error() -> None:
    # The parse test above is only worth something if a broken template fails to parse.
    broken = text(STORAGE).replace("param name string", "param name string =", 1)
    with pytest.raises(UnexpectedInput):
        BicepParser().parse(text=broken)


# --- Storage -----------------------------------------------------------------------------------


def test_storage_accepts_identities_only_over_tls(templates: dict[str, Template]) -> None:
    accounts = [
        body(res)
        for template in templates.values()
        for res in resources(template, "Microsoft.Storage/storageAccounts")
    ]
    assert len(accounts) == 1
    account = accounts[0]
    props = account["properties"]
    assert account["kind"] == "StorageV2"
    assert props["minimumTlsVersion"] == "TLS1_2"
    assert props["supportsHttpsTrafficOnly"] is True
    assert props["allowBlobPublicAccess"] is False
    assert props["allowSharedKeyAccess"] is False
    assert props["defaultToOAuthAuthentication"] is True


def test_storage_has_the_store_containers_private(templates: dict[str, Template]) -> None:
    storage = templates[STORAGE]
    assert set(storage["variables"]["exporterContainers"]["value"]) == {
        "config",
        "runs",
        "state",
        "snapshots",
    }
    (containers,) = resources(storage, "Microsoft.Storage/storageAccounts/blobServices/containers")
    loop = containers["config"]["loop_type"]["detail"]["array_name"]["function"]["parameters"]
    assert loop["arg_1"] == "exporterContainers"
    assert set(loop["arg_2"]) == {"deploymentContainerName", "deadLetterContainerName"}
    assert body(containers)["properties"]["publicAccess"] == "None"


def test_run_artefacts_expire_after_the_retention_parameter(
    templates: dict[str, Template],
) -> None:
    storage = templates[STORAGE]
    policy = only(storage, "Microsoft.Storage/storageAccounts/managementPolicies")
    rules = policy["properties"]["policy"]["rules"]["function"]["parameters"]
    assert rules["arg_1"] == ["runsRule"], "the runs rule must always be present"
    rule = storage["variables"]["runsRule"]["value"]
    assert rule["enabled"] is True
    assert rule["definition"]["filters"]["prefixMatch"] == ["runs/"]
    delete = rule["definition"]["actions"]["baseBlob"]["delete"]
    assert delete["daysAfterModificationGreaterThan"] == "runRetentionDays"
    # The retention is a parameter of the module and of main, passed through, with a default.
    assert storage["parameters"]["runRetentionDays"]["type"] == "int"
    main = templates[MAIN]
    assert main["parameters"]["runRetentionDays"]["default"] == 30
    assert main["modules"]["storage"]["config"]["params"]["runRetentionDays"] == "runRetentionDays"


# --- Key Vault ---------------------------------------------------------------------------------


def test_key_vault_uses_rbac_and_cannot_be_purged(templates: dict[str, Template]) -> None:
    vault = only(templates[KEYVAULT], "Microsoft.KeyVault/vaults")["properties"]
    assert vault["enableRbacAuthorization"] is True
    assert vault["enableSoftDelete"] is True
    assert vault["enablePurgeProtection"] is True
    assert "accessPolicies" not in vault
    assert vault["publicNetworkAccess"] == "publicNetworkAccess"
    assert set(
        templates[KEYVAULT]["parameters"]["publicNetworkAccess"]["decorators"][1]["argument"]
    ) == {
        "Enabled",
        "Disabled",
    }


# --- App settings ------------------------------------------------------------------------------


def test_every_setting_the_code_reads_is_set(templates: dict[str, Template]) -> None:
    missing = set(APP_SETTING_NAMES) - set(app_settings(templates))
    assert not missing, f"app settings the code reads but the template does not set: {missing}"


def test_nothing_flex_consumption_forbids_is_set(templates: dict[str, Template]) -> None:
    names = set(app_settings(templates))
    assert not names & FLEX_FORBIDDEN
    assert not [name for name in names if name.startswith("WEBSITE_CONTENT")]


def test_storage_connections_are_identity_based(templates: dict[str, Template]) -> None:
    settings = app_settings(templates)
    for prefix in ("AzureWebJobsStorage", "SnapshotStorage"):
        assert settings[f"{prefix}__credential"] == "managedidentity"
        assert settings[f"{prefix}__clientId"] == "identityClientId"
    for service in ("blob", "queue", "table"):
        assert settings[f"AzureWebJobsStorage__{service}ServiceUri"] == f"{service}Endpoint"
    assert settings["EXPORTER_STORAGE__blobServiceUri"] == "blobEndpoint"
    assert settings["AZURE_CLIENT_ID"] == "identityClientId"
    assert settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == (
        "ClientId=${identityClientId};Authorization=AAD"
    )


def test_no_keys_or_connection_strings_in_app_settings(templates: dict[str, Template]) -> None:
    dumped = json.dumps(app_settings(templates))
    for marker in SECRET_MARKERS:
        assert marker not in dumped
    # Only the Application Insights connection string (not a secret) is allowed.
    named_like_secrets = {
        name
        for name in app_settings(templates)
        if re.search(r"(?i)(^|_)(key|secret|password|sas)(_|$)|accountkey|connection_?string", name)
    }
    assert named_like_secrets == {"APPLICATIONINSIGHTS_CONNECTION_STRING"}


def test_only_the_event_grid_template_lists_keys(templates: dict[str, Template]) -> None:
    for name, template in templates.items():
        list_calls = [
            node
            for node in walk(template)
            if isinstance(node, dict) and node.get("type") == "list_func"
        ]
        raw = text(name)
        if name == EVENTGRID:
            assert len(list_calls) == 1
            continue
        assert not list_calls, f"{name} calls a list*() function"
        for marker in SECRET_MARKERS:
            assert marker not in raw, f"{name} contains {marker}"


def test_app_settings_values_the_code_parses(templates: dict[str, Template]) -> None:
    settings = app_settings(templates)
    assert settings["EXPORTER_ALLOW_LOOPBACK_SANDBOX"] == "false"
    assert settings["EXPORTER_TIMER_SCHEDULE"] == "timerSchedule"
    # The default schedule is a 6-field NCRONTAB, the same as the code's default.
    from exporter.settings import DEFAULT_SCHEDULE

    assert templates[FUNCTION]["parameters"]["timerSchedule"]["default"] == DEFAULT_SCHEDULE
    assert templates[MAIN]["parameters"]["timerSchedule"]["default"] == DEFAULT_SCHEDULE


# --- Flex Consumption --------------------------------------------------------------------------


def test_plan_is_flex_consumption(templates: dict[str, Template]) -> None:
    plan = only(templates[FUNCTION], "Microsoft.Web/serverfarms")
    assert plan["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    assert plan["properties"]["reserved"] is True


def test_function_app_shape(templates: dict[str, Template]) -> None:
    site = only(templates[FUNCTION], "Microsoft.Web/sites")
    props = site["properties"]
    assert site["kind"] == "functionapp,linux"
    assert site["identity"]["type"] == "UserAssigned"
    assert props["httpsOnly"] is True
    assert props["siteConfig"]["ftpsState"] == "Disabled"
    assert props["siteConfig"]["minTlsVersion"] == "1.2"
    config = props["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "3.11"}
    assert config["deployment"]["storage"]["type"] == "blobContainer"
    assert config["deployment"]["storage"]["authentication"]["type"] == "UserAssignedIdentity"
    scale = config["scaleAndConcurrency"]
    assert {"maximumInstanceCount", "instanceMemoryMB"} <= set(scale)
    durable = [group for group in scale["alwaysReady"] if group["name"] == "durable"]
    assert durable and durable[0]["instanceCount"] == "durableAlwaysReadyInstances"
    assert templates[MAIN]["parameters"]["durableAlwaysReadyInstances"]["default"] >= 1
    assert templates[FUNCTION]["parameters"]["durableAlwaysReadyInstances"]["default"] >= 1


def test_basic_auth_publishing_is_off(templates: dict[str, Template]) -> None:
    policies = [
        body(res)
        for res in resources(
            templates[FUNCTION], "Microsoft.Web/sites/basicPublishingCredentialsPolicies"
        )
    ]
    assert {policy["name"]: policy["properties"]["allow"] for policy in policies} == {
        "ftp": False,
        "scm": False,
    }


def test_easy_auth_protects_the_api_but_not_the_blob_webhook(
    templates: dict[str, Template],
) -> None:
    auth = only(templates[FUNCTION], "Microsoft.Web/sites/config")
    assert auth["name"] == "authsettingsV2"
    props = auth["properties"]
    assert props["platform"]["enabled"] == "authEnabled"
    # One app serves API callers (401) and browsers (sent to sign in): the code decides, and
    # every HTTP function refuses a request without a principal (tests/functions, tests/console).
    assert props["globalValidation"]["unauthenticatedClientAction"] == "AllowAnonymous"
    assert props["globalValidation"]["requireAuthentication"] is False
    assert props["globalValidation"]["excludedPaths"] == ["/runtime/webhooks/eventgrid"]
    # Authentication follows the authClientId parameter (empty: off).
    assert "authClientId" in json.dumps(templates[FUNCTION]["variables"]["authEnabled"])


# --- Roles -------------------------------------------------------------------------------------


def role_assignments(templates: dict[str, Template]) -> list[tuple[str, str, Template]]:
    """(template, symbolic name, resource) of every role assignment."""
    return [
        (name, symbol, resource)
        for name, template in templates.items()
        for symbol, resource in template.get("resources", {}).items()
        if resource["type"] == "Microsoft.Authorization/roleAssignments"
    ]


def role_ids(resource: Template) -> set[str]:
    return set(GUID.findall(json.dumps(body(resource)["properties"]["roleDefinitionId"])))


def test_role_definitions_are_known_built_in_roles(templates: dict[str, Template]) -> None:
    found: set[str] = set()
    for node in walk(templates):
        if isinstance(node, dict) and "roleDefinitionId" in node:
            ids = set(GUID.findall(json.dumps(node["roleDefinitionId"])))
            assert ids, f"roleDefinitionId without a literal built-in role id: {node}"
            unknown = ids - set(BUILT_IN_ROLES)
            assert not unknown, f"unknown role definition ids: {unknown}"
            found |= ids
    assert found, "no role assignment found"


def test_role_assignment_names_are_deterministic(templates: dict[str, Template]) -> None:
    assignments = role_assignments(templates)
    assert len(assignments) >= 8
    for _, symbol, resource in assignments:
        assert body(resource)["name"]["function"]["type"] == "guid", symbol


def test_every_role_assignment_names_its_role_in_a_comment(
    templates: dict[str, Template],
) -> None:
    for name, symbol, resource in role_assignments(templates):
        lines = text(name).splitlines()
        start = next(i for i, line in enumerate(lines) if line.startswith(f"resource {symbol} "))
        comments = []
        for line in reversed(lines[:start]):
            if not line.startswith("//"):
                break
            comments.append(line)
        comment = " ".join(comments)
        for role_id in role_ids(resource):
            assert BUILT_IN_ROLES[role_id] in comment, f"{name}: {symbol} lacks its role's name"


def app_roles(templates: dict[str, Template]) -> dict[str, tuple[str, Any]]:
    """Role name -> (scope, condition) of the app identity's role assignments."""
    granted = {}
    for _, _, resource in role_assignments(templates):
        config = body(resource)
        if config["properties"]["principalId"] != "appPrincipalId":
            continue
        (role_id,) = role_ids(resource)
        granted[BUILT_IN_ROLES[role_id]] = (config["scope"], resource["config"].get("condition"))
    return granted


def test_the_app_identity_gets_exactly_what_the_code_uses(templates: dict[str, Template]) -> None:
    granted = app_roles(templates)
    assert granted == {
        "Storage Blob Data Owner": ("storage", None),
        "Storage Queue Data Contributor": ("storage", None),
        "Storage Table Data Contributor": ("storage", None),
        "Monitoring Metrics Publisher": ("applicationInsights", None),
        "Key Vault Secrets Officer": ("vault", "allowKeyWritesFromApp"),
        # Reading is always granted (operator-managed keys); writing only when asked.
        "Key Vault Secrets User": ("vault", None),
    }
    access = templates[ACCESS]["parameters"]["allowKeyWritesFromApp"]
    assert access["type"] == "bool" and access["default"] is True
    main = templates[MAIN]
    assert main["parameters"]["allowKeyWritesFromApp"]["default"] is True
    assert main["modules"]["access"]["config"]["params"]["allowKeyWritesFromApp"] == (
        "allowKeyWritesFromApp"
    )


def test_the_deployer_gets_roles_only_when_asked(templates: dict[str, Template]) -> None:
    for _, symbol, resource in role_assignments(templates):
        config = body(resource)
        if config["properties"]["principalId"] == "deployerPrincipalId":
            condition = json.dumps(resource["config"].get("condition"))
            assert "grantDeployer" in condition, symbol


# --- Monitoring --------------------------------------------------------------------------------


def test_telemetry_requires_entra_and_lands_in_log_analytics(
    templates: dict[str, Template],
) -> None:
    monitoring = templates[MONITORING]
    insights = only(monitoring, "Microsoft.Insights/components")["properties"]
    assert insights["DisableLocalAuth"] is True
    assert insights["WorkspaceResourceId"]
    only(monitoring, "Microsoft.OperationalInsights/workspaces")


# The alerts and the workbook are checked against the code in tests/infra/test_alerts.py.


# --- Event Grid --------------------------------------------------------------------------------


def test_system_topic_watches_the_storage_account(templates: dict[str, Template]) -> None:
    topic = only(templates[TOPIC], "Microsoft.EventGrid/systemTopics")
    assert topic["properties"]["topicType"] == "Microsoft.Storage.StorageAccounts"
    assert topic["identity"]["type"] == "SystemAssigned"


def test_subscription_sends_new_snapshots_to_the_blob_trigger(
    templates: dict[str, Template],
) -> None:
    grid = templates[EVENTGRID]
    sub = only(grid, "Microsoft.EventGrid/systemTopics/eventSubscriptions")["properties"]
    assert sub["filter"]["includedEventTypes"] == ["Microsoft.Storage.BlobCreated"]
    assert sub["filter"]["subjectBeginsWith"] == (
        "/blobServices/default/containers/${snapshotContainerName}/"
    )
    assert grid["parameters"]["snapshotContainerName"]["default"] == "snapshots"
    assert grid["parameters"]["functionName"]["default"] == "snapshot_blob_trigger"
    assert sub["destination"]["endpointType"] == "WebHook"
    # Event subscription names allow letters, digits and hyphens only (3-64).
    name = only(grid, "Microsoft.EventGrid/systemTopics/eventSubscriptions")["name"]
    assert name == "snapshots-to-${replace(functionName, '_', '-')}"
    resolved = "snapshots-to-" + grid["parameters"]["functionName"]["default"].replace("_", "-")
    assert re.fullmatch(r"[A-Za-z0-9-]{3,64}", resolved)
    assert sub["destination"]["properties"]["endpointUrl"] == "webhookUrl"
    url = grid["variables"]["webhookUrl"]["value"]
    assert url.startswith(
        "https://${functionApp.properties.defaultHostName}/runtime/webhooks/eventgrid?"
    )
    # The Event Grid trigger's webhook: the function gets the event (a name), never the blob.
    assert "functionName=${functionName}&code=${eventGridExtensionKey}" in url
    key = grid["variables"]["eventGridExtensionKey"]["value"]["operator"]["operands"]
    assert key["operand_1"]["function"]["parameters"]["resource_identifier"] == (
        "${functionApp.id}/host/default"
    )
    assert json.dumps(key["operand_2"]).count("eventgrid_extension") == 1
    dead_letter = sub["deadLetterWithResourceIdentity"]["deadLetterDestination"]["properties"]
    assert dead_letter["blobContainerName"] == "deadLetterContainerName"


# --- Wiring (what a Bicep compiler would catch) -----------------------------------------------


def module_output_references(node: Any) -> set[tuple[str, str]]:
    """(module, output) pairs of every ``module.outputs.name`` expression under ``node``."""
    found = set()
    for item in walk(node):
        if not (isinstance(item, dict) and item.get("type") == "property_accessor"):
            continue
        outer = item["operands"]
        inner = outer["operand_2"]
        if isinstance(outer["operand_1"], str) and isinstance(inner, dict) and "operator" in inner:
            chain = inner["operator"]["operands"]
            if chain.get("operand_1") == "outputs" and isinstance(chain.get("operand_2"), str):
                found.add((outer["operand_1"], chain["operand_2"]))
    return found


def test_module_parameters_and_outputs_match(templates: dict[str, Template]) -> None:
    main = templates[MAIN]
    paths = {}
    for symbol, module in main["modules"].items():
        path = module["detail"]["path"]
        assert path in templates, f"module {symbol}: {path} does not exist"
        paths[symbol] = path
        declared = templates[path]["parameters"]
        passed = set(module["config"]["params"])
        assert passed <= set(declared), f"{path} has no parameter(s) {passed - set(declared)}"
        required = {name for name, param in declared.items() if "default" not in param}
        assert required <= passed, f"{path}: required parameter(s) {required - passed} not passed"
    for symbol, output in module_output_references(main):
        assert symbol in paths, f"{symbol}.outputs.{output}: no such module"
        assert output in templates[paths[symbol]]["outputs"], (
            f"{paths[symbol]} has no output {output}"
        )


def test_main_outputs_what_deployment_steps_use(templates: dict[str, Template]) -> None:
    outputs = set(templates[MAIN]["outputs"])
    script = text("scripts/postdeploy.sh")
    used = set(re.findall(r"\$\{?(AZURE_[A-Z_]+)", script)) - {"AZURE_SUBSCRIPTION_ID"}
    assert used, "the postdeploy script reads no azd outputs?"
    assert used <= outputs, (
        f"postdeploy.sh reads {used - outputs}, which main.bicep does not output"
    )
    ps_used = set(re.findall(r"(AZURE_[A-Z_]+)", text("scripts/postdeploy.ps1"))) - {
        "AZURE_SUBSCRIPTION_ID"
    }
    assert ps_used <= outputs
    # The script passes exactly the event grid template's parameters that have no default.
    grid_params = templates[EVENTGRID]["parameters"]
    passed = set(re.findall(r"^\s+(\w+)=\"\$", script, re.MULTILINE))
    assert passed <= set(grid_params)
    assert {name for name, param in grid_params.items() if "default" not in param} <= passed


def test_parameters_file_matches_main(templates: dict[str, Template]) -> None:
    declared = templates[MAIN]["parameters"]
    values = json.loads(text("main.parameters.json"))["parameters"]
    assert set(values) <= set(declared)
    required = {name for name, param in declared.items() if "default" not in param}
    assert required <= set(values)
    assert values["environmentName"]["value"] == "${AZURE_ENV_NAME}"
    assert values["location"]["value"] == "${AZURE_LOCATION}"
    assert values["principalId"]["value"] == "${AZURE_PRINCIPAL_ID}"
