// Every role assignment of the deployment, in one place. The app's user-assigned identity gets
// exactly what the code uses; the deploying user optionally gets what setting up needs.
// Role assignment names are deterministic (guid of scope, principal and role), so redeploying
// never duplicates them.

@description('Storage account name.')
param storageAccountName string

@description('Key Vault name.')
param keyVaultName string

@description('Application Insights component name.')
param applicationInsightsName string

@description('Event Grid system topic name (its identity writes dead-lettered events).')
param systemTopicName string

@description('Blob container Event Grid dead-letters to.')
param deadLetterContainerName string

@description('Principal id of the app\'s user-assigned managed identity.')
param appPrincipalId string

@description('true: the app may write secrets (saving a connection through the HTTP API stores its key). false: read-only access to secrets.')
param allowKeyWritesFromApp bool = true

@description('Principal id of the deploying user or pipeline; empty grants nothing.')
param deployerPrincipalId string = ''

@description('Type of the deploying principal.')
@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param deployerPrincipalType string = 'User'

@description('Let the deploying principal manage connections\' keys in Key Vault.')
param grantDeployerKeyVaultAccess bool = true

@description('Let the deploying principal read and write blobs (upload snapshots, edit config) with Entra sign-in.')
param grantDeployerStorageAccess bool = true

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource deadLetterContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: deadLetterContainerName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource systemTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' existing = {
  name: systemTopicName
}

var grantDeployer = !empty(deployerPrincipalId)

// --- The app's identity -------------------------------------------------------------------------

// Storage Blob Data Owner: the Functions host manages its own containers and blob leases
// (Durable task hub, timers, deployment package); the exporter's store reads and writes blobs.
resource appBlobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, appPrincipalId, 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b')
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b')
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Storage Queue Data Contributor: Durable Functions control and work-item queues; the Event Grid
// blob trigger's poison queue.
resource appQueueContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, appPrincipalId, '974c5e8b-45b9-4653-ba55-5f855dd0fb88')
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '974c5e8b-45b9-4653-ba55-5f855dd0fb88')
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Storage Table Data Contributor: Durable Functions instance and history tables.
resource appTableContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, appPrincipalId, '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3')
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3')
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Key Vault Secrets Officer (b86a8fe4-44ce-4948-aee5-eccb2c155cd7), only when the app saves
// connections' keys (allowKeyWritesFromApp): saving a connection through the HTTP API writes its
// key as a new secret. Azure RBAC cannot scope the creation of a secret that does not exist yet,
// so this is on the vault; the app itself overwrites and deletes only secrets it created for a
// connection (tag exporter-connection), never an operator's. See docs/deploy.md.
resource appVaultOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (allowKeyWritesFromApp) {
  name: guid(vault.id, appPrincipalId, 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7')
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7')
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Key Vault Secrets User (4633458b-17de-408a-b874-0445c86b69e6), always: the app reads every
// connection's key, operator-managed ones included. With allowKeyWritesFromApp=false this is
// all it has (operators set keys): the least-privilege setup.
resource appVaultUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, appPrincipalId, '4633458b-17de-408a-b874-0445c86b69e6')
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '4633458b-17de-408a-b874-0445c86b69e6')
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Monitoring Metrics Publisher: Entra-authenticated telemetry ingestion (local auth is disabled).
resource appMetricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(applicationInsights.id, appPrincipalId, '3913510d-42f4-4e42-8a64-420c390055eb')
  scope: applicationInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '3913510d-42f4-4e42-8a64-420c390055eb')
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// --- Event Grid system topic --------------------------------------------------------------------

// Storage Blob Data Contributor, on the dead-letter container only: undeliverable snapshot events
// are written there (shared keys are off, so Event Grid uses its own identity).
resource topicDeadLetterWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(deadLetterContainer.id, systemTopicName, 'ba92f5b4-2d11-453d-a403-e96b0029c9fe')
  scope: deadLetterContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'ba92f5b4-2d11-453d-a403-e96b0029c9fe')
    principalId: systemTopic.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

// --- The deploying principal (optional) ---------------------------------------------------------

// Key Vault Secrets Officer: set and rotate connections' API keys (az keyvault secret set).
resource deployerVaultOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (grantDeployer && grantDeployerKeyVaultAccess) {
  name: guid(vault.id, deployerPrincipalId, 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7')
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7')
    principalId: deployerPrincipalId
    principalType: deployerPrincipalType
  }
}

// Storage Blob Data Contributor: upload snapshots and edit config with --auth-mode login.
resource deployerBlobContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (grantDeployer && grantDeployerStorageAccess) {
  name: guid(storage.id, deployerPrincipalId, 'ba92f5b4-2d11-453d-a403-e96b0029c9fe')
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'ba92f5b4-2d11-453d-a403-e96b0029c9fe')
    principalId: deployerPrincipalId
    principalType: deployerPrincipalType
  }
}
