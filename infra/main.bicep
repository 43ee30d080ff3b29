// ActiveCampaign segment exporter: everything the Functions app needs, in one resource group.
// `azd up` deploys this file, then the code, then infra/eventgrid.bicep (postdeploy hook).
// Plain Azure CLI: az deployment group create -g <group> -f infra/main.bicep -p environmentName=<name>
targetScope = 'resourceGroup'

@description('Name of the environment (azd environment name); part of every resource name.')
@minLength(1)
@maxLength(64)
param environmentName string

@description('Azure region (one that offers Flex Consumption: az functionapp list-flexconsumption-locations).')
param location string = resourceGroup().location

@description('Principal id of the deploying user or pipeline (azd fills it in); empty grants it nothing.')
param principalId string = ''

@description('Type of principalId.')
@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param principalType string = 'User'

@description('Give principalId Key Vault Secrets Officer on the vault, to set connections\' API keys.')
param grantDeployerKeyVaultAccess bool = true

@description('Give principalId Storage Blob Data Contributor on the account, to upload snapshots and edit config.')
param grantDeployerStorageAccess bool = true

@description('The app always gets Key Vault Secrets User (reads keys). true: also Secrets Officer on the vault, so saving a connection through the HTTP API stores its key (the app changes only secrets it created). false: read-only, operators set keys (least privilege).')
param allowKeyWritesFromApp bool = true

@description('Days run artefacts (rejected rows, chunks, plans, reports: personal data) are kept.')
@minValue(1)
@maxValue(3650)
param runRetentionDays int = 30

@description('Days segment snapshots are kept; 0 keeps them until you delete them.')
@minValue(0)
@maxValue(3650)
param snapshotRetentionDays int = 0

@description('Storage replication.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
  'Standard_RAGRS'
  'Standard_RAGZRS'
])
param storageSkuName string = 'Standard_GRS'

@description('Key Vault public network access ("Disabled" needs a private endpoint for the app).')
@allowed([
  'Enabled'
  'Disabled'
])
param keyVaultPublicNetworkAccess string = 'Enabled'

@description('NCRONTAB (6 fields, UTC) of the timer that looks for due exports; its interval is the finest export schedule accepted.')
param timerSchedule string = '0 */5 * * * *'

@description('Extra ActiveCampaign API host names (comma-separated, *. wildcards) API keys may be sent to.')
param hostnameAllowlist string = ''

@description('How many push activities run at once (each gets 1/width of the account rate budget).')
@minValue(1)
@maxValue(32)
param pushWaveWidth int = 4

@description('Upper bound on instances the app scales out to.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Memory per instance.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Always-ready instances for the Durable Functions group; 0 scales to zero (slower starts).')
@minValue(0)
@maxValue(20)
param durableAlwaysReadyInstances int = 1

@description('Spread instances over availability zones (region permitting).')
param zoneRedundant bool = false

@description('Client id of the Entra app registration protecting the HTTP API (App Service Authentication); empty leaves it off. See docs/deploy.md.')
param authClientId string = ''

@description('Address that receives "export run failed" alerts; empty: alert without notification.')
param alertEmail string = ''

@description('Days Log Analytics keeps logs.')
@minValue(30)
@maxValue(730)
param logRetentionInDays int = 30

@description('Tags for every resource.')
param tags object = {}

var resourceToken = toLower(uniqueString(subscription().id, resourceGroup().id, environmentName, location))
var allTags = union(tags, {
  'azd-env-name': environmentName
})
var functionAppName = 'func-${resourceToken}'
var deploymentContainerName = 'app-package-${take(functionAppName, 32)}-${take(resourceToken, 7)}'
var deadLetterContainerName = 'eventgrid-deadletter'

// One user-assigned identity for the app: it exists before the app, so role assignments are in
// place when the app first starts, and its client id can be written into the app settings.
resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-${resourceToken}'
  location: location
  tags: allTags
}

module storage 'core/storage.bicep' = {
  name: 'storage'
  params: {
    name: 'st${resourceToken}'
    location: location
    tags: allTags
    skuName: storageSkuName
    deploymentContainerName: deploymentContainerName
    deadLetterContainerName: deadLetterContainerName
    runRetentionDays: runRetentionDays
    snapshotRetentionDays: snapshotRetentionDays
  }
}

module keyVault 'core/keyvault.bicep' = {
  name: 'keyvault'
  params: {
    name: 'kv-${resourceToken}'
    location: location
    tags: allTags
    publicNetworkAccess: keyVaultPublicNetworkAccess
  }
}

module monitoring 'core/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    logAnalyticsName: 'log-${resourceToken}'
    applicationInsightsName: 'appi-${resourceToken}'
    actionGroupName: 'ag-${resourceToken}'
    location: location
    tags: allTags
    retentionInDays: logRetentionInDays
    alertEmail: alertEmail
  }
}

module eventGridTopic 'core/eventgrid-topic.bicep' = {
  name: 'eventgrid-topic'
  params: {
    name: 'evgt-${resourceToken}'
    location: location
    tags: allTags
    storageAccountId: storage.outputs.id
  }
}

module access 'app/access.bicep' = {
  name: 'access'
  params: {
    storageAccountName: storage.outputs.name
    keyVaultName: keyVault.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    systemTopicName: eventGridTopic.outputs.name
    deadLetterContainerName: deadLetterContainerName
    appPrincipalId: identity.properties.principalId
    allowKeyWritesFromApp: allowKeyWritesFromApp
    deployerPrincipalId: principalId
    deployerPrincipalType: principalType
    grantDeployerKeyVaultAccess: grantDeployerKeyVaultAccess
    grantDeployerStorageAccess: grantDeployerStorageAccess
  }
}

module functionApp 'app/function.bicep' = {
  name: 'function'
  params: {
    name: functionAppName
    planName: 'plan-${resourceToken}'
    location: location
    tags: allTags
    identityId: identity.id
    identityClientId: identity.properties.clientId
    blobEndpoint: storage.outputs.blobEndpoint
    queueEndpoint: storage.outputs.queueEndpoint
    tableEndpoint: storage.outputs.tableEndpoint
    deploymentContainerName: deploymentContainerName
    applicationInsightsConnectionString: monitoring.outputs.connectionString
    keyVaultUri: keyVault.outputs.uri
    timerSchedule: timerSchedule
    hostnameAllowlist: hostnameAllowlist
    pushWaveWidth: pushWaveWidth
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    durableAlwaysReadyInstances: durableAlwaysReadyInstances
    zoneRedundant: zoneRedundant
    authClientId: authClientId
  }
  // The host must be able to reach its storage on first start.
  dependsOn: [
    access
  ]
}

// azd stores these in the environment (.azure/<env>/.env); the postdeploy hook and the docs use them.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = resourceGroup().name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output AZURE_FUNCTION_APP_URL string = 'https://${functionApp.outputs.defaultHostName}'
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_STORAGE_BLOB_ENDPOINT string = storage.outputs.blobEndpoint
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output AZURE_KEY_VAULT_URI string = keyVault.outputs.uri
output AZURE_EVENTGRID_SYSTEM_TOPIC_NAME string = eventGridTopic.outputs.name
output AZURE_EVENTGRID_DEADLETTER_CONTAINER string = deadLetterContainerName
output AZURE_MANAGED_IDENTITY_CLIENT_ID string = identity.properties.clientId
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.applicationInsightsName
