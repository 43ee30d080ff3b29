# azd postdeploy hook (Windows): same steps as postdeploy.sh. Subscribes the snapshot Event Grid trigger
# to the storage account's Event Grid system topic once the eventgrid_extension key exists.
# Needs the Azure CLI signed in to the same tenant and subscription as azd (az login).
$ErrorActionPreference = 'Stop'

$template = Join-Path $PSScriptRoot '..' 'eventgrid.bicep'
foreach ($name in 'AZURE_RESOURCE_GROUP', 'AZURE_FUNCTION_APP_NAME', 'AZURE_EVENTGRID_SYSTEM_TOPIC_NAME', 'AZURE_STORAGE_ACCOUNT_NAME') {
    if (-not [Environment]::GetEnvironmentVariable($name)) {
        throw "$name is not set: run through azd, or set the outputs of infra/main.bicep"
    }
}
$deadLetter = if ($env:AZURE_EVENTGRID_DEADLETTER_CONTAINER) { $env:AZURE_EVENTGRID_DEADLETTER_CONTAINER } else { 'eventgrid-deadletter' }

if ($env:AZURE_SUBSCRIPTION_ID) {
    az account set --subscription $env:AZURE_SUBSCRIPTION_ID
}

$ready = $false
for ($attempt = 1; $attempt -le 30; $attempt++) {
    $key = az functionapp keys list --resource-group $env:AZURE_RESOURCE_GROUP --name $env:AZURE_FUNCTION_APP_NAME --query 'systemKeys.eventgrid_extension' --output tsv 2>$null
    if ($key) { $ready = $true; break }
    Write-Host "Waiting for the Event Grid trigger's system key ($attempt/30)..."
    Start-Sleep -Seconds 10
}
Remove-Variable key -ErrorAction SilentlyContinue
if (-not $ready) {
    throw "The eventgrid_extension key of $($env:AZURE_FUNCTION_APP_NAME) did not appear within 5 minutes; check that the code deployed, then run this script again."
}

Write-Host 'Creating the Event Grid subscription for the snapshots container...'
az deployment group create `
    --resource-group $env:AZURE_RESOURCE_GROUP `
    --name exporter-eventgrid `
    --template-file $template `
    --parameters functionAppName=$($env:AZURE_FUNCTION_APP_NAME) systemTopicName=$($env:AZURE_EVENTGRID_SYSTEM_TOPIC_NAME) storageAccountName=$($env:AZURE_STORAGE_ACCOUNT_NAME) deadLetterContainerName=$deadLetter `
    --output none
if ($LASTEXITCODE -ne 0) { throw 'az deployment group create failed' }
Write-Host 'Snapshots dropped into the snapshots container now start their exports.'
