#!/bin/sh
# azd postdeploy hook: subscribe the snapshot Event Grid trigger to the storage account's Event Grid
# system topic. Runs after the code is deployed because the webhook needs the eventgrid_extension
# system key, which the Functions host creates once it has loaded the blob-triggered function.
# Needs the Azure CLI signed in to the same tenant and subscription as azd (az login).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
template="$here/../eventgrid.bicep"

: "${AZURE_RESOURCE_GROUP:?run through azd, or export the outputs of infra/main.bicep}"
: "${AZURE_FUNCTION_APP_NAME:?}"
: "${AZURE_EVENTGRID_SYSTEM_TOPIC_NAME:?}"
: "${AZURE_STORAGE_ACCOUNT_NAME:?}"
deadletter="${AZURE_EVENTGRID_DEADLETTER_CONTAINER:-eventgrid-deadletter}"

if [ -n "${AZURE_SUBSCRIPTION_ID:-}" ]; then
  az account set --subscription "$AZURE_SUBSCRIPTION_ID"
fi

# The host indexes the functions (and creates the extension key) shortly after deployment.
attempt=0
while :; do
  key=$(az functionapp keys list --resource-group "$AZURE_RESOURCE_GROUP" \
    --name "$AZURE_FUNCTION_APP_NAME" --query "systemKeys.eventgrid_extension" --output tsv 2>/dev/null || true)
  if [ -n "$key" ]; then
    break
  fi
  attempt=$((attempt + 1))
  if [ "$attempt" -ge 30 ]; then
    echo "The eventgrid_extension key of $AZURE_FUNCTION_APP_NAME did not appear within 5 minutes." >&2
    echo "Check that the code deployed (snapshot_blob_trigger is listed in the portal), then run this script again." >&2
    exit 1
  fi
  echo "Waiting for the Event Grid trigger's system key ($attempt/30)..."
  sleep 10
done
unset key

echo "Creating the Event Grid subscription for the snapshots container..."
az deployment group create \
  --resource-group "$AZURE_RESOURCE_GROUP" \
  --name "exporter-eventgrid" \
  --template-file "$template" \
  --parameters \
    functionAppName="$AZURE_FUNCTION_APP_NAME" \
    systemTopicName="$AZURE_EVENTGRID_SYSTEM_TOPIC_NAME" \
    storageAccountName="$AZURE_STORAGE_ACCOUNT_NAME" \
    deadLetterContainerName="$deadletter" \
  --output none
echo "Snapshots dropped into the snapshots container now start their exports."
