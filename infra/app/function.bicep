// The Functions app on the Flex Consumption plan: Python 3.11, one user-assigned identity for
// everything (host storage, the exporter's store, the snapshot trigger, Key Vault, telemetry).
// App settings carry endpoints and identity client ids only: no keys, no connection strings (the
// Application Insights connection string is not a secret and ingestion needs an Entra token).

@description('Function app name (globally unique host name).')
param name string

@description('Flex Consumption plan name.')
param planName string

@description('Azure region.')
param location string

@description('Tags for every resource; the app also gets azd-service-name.')
param tags object = {}

@description('The azure.yaml service this app hosts (azd finds the app by this tag).')
param serviceName string = 'api'

@description('Resource id of the user-assigned managed identity.')
param identityId string

@description('Client id of the user-assigned managed identity.')
param identityClientId string

@description('Blob endpoint of the storage account (https://NAME.blob.core.windows.net/).')
param blobEndpoint string

@description('Queue endpoint of the storage account.')
param queueEndpoint string

@description('Table endpoint of the storage account.')
param tableEndpoint string

@description('Blob container holding the deployment package.')
param deploymentContainerName string

@description('Application Insights connection string (not a secret: ingestion requires Entra auth).')
param applicationInsightsConnectionString string

@description('Key Vault URI for connections\' API keys.')
param keyVaultUri string

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

@description('Spread instances over availability zones (not every region supports it for Flex Consumption; costs at least two always-ready instances).')
param zoneRedundant bool = false

@description('Always-ready instances for the Durable Functions group (orchestrators, entities, activities). 0 scales to zero.')
@minValue(0)
@maxValue(20)
param durableAlwaysReadyInstances int = 1

@description('Client id of the Entra app registration that protects the HTTP API (App Service Authentication). Empty leaves authentication off.')
param authClientId string = ''

@description('Entra tenant that issues tokens for the HTTP API.')
param authTenantId string = tenant().tenantId

var authEnabled = !empty(authClientId)

var appSettings = [
  // Functions host storage (Durable task hub, timers, leases): identity-based, no keys.
  {
    name: 'AzureWebJobsStorage__blobServiceUri'
    value: blobEndpoint
  }
  {
    name: 'AzureWebJobsStorage__queueServiceUri'
    value: queueEndpoint
  }
  {
    name: 'AzureWebJobsStorage__tableServiceUri'
    value: tableEndpoint
  }
  {
    name: 'AzureWebJobsStorage__credential'
    value: 'managedidentity'
  }
  {
    name: 'AzureWebJobsStorage__clientId'
    value: identityClientId
  }
  // Telemetry, sent with the identity's token (the component has local auth disabled).
  {
    name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
    value: applicationInsightsConnectionString
  }
  {
    name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
    value: 'ClientId=${identityClientId};Authorization=AAD'
  }
  // The exporter's own store (config, runs, state, snapshots containers).
  {
    name: 'EXPORTER_STORAGE__blobServiceUri'
    value: blobEndpoint
  }
  // Snapshot storage (connection="SnapshotStorage"); new snapshots arrive as Event Grid events.
  {
    name: 'SnapshotStorage__blobServiceUri'
    value: blobEndpoint
  }
  {
    name: 'SnapshotStorage__queueServiceUri'
    value: queueEndpoint
  }
  {
    name: 'SnapshotStorage__credential'
    value: 'managedidentity'
  }
  {
    name: 'SnapshotStorage__clientId'
    value: identityClientId
  }
  // Key Vault and the identity DefaultAzureCredential uses for it (and for the store).
  {
    name: 'EXPORTER_KEYVAULT_URL'
    value: keyVaultUri
  }
  {
    name: 'AZURE_CLIENT_ID'
    value: identityClientId
  }
  // Behaviour.
  {
    name: 'EXPORTER_TIMER_SCHEDULE'
    value: timerSchedule
  }
  {
    name: 'EXPORTER_HOSTNAME_ALLOWLIST'
    value: hostnameAllowlist
  }
  {
    name: 'EXPORTER_ALLOW_LOOPBACK_SANDBOX'
    value: 'false'
  }
  {
    name: 'EXPORTER_PUSH_WAVE_WIDTH'
    value: string(pushWaveWidth)
  }
]

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  // checkov:skip=CKV_AZURE_225: zone redundancy is the zoneRedundant parameter: not every region offers it for Flex Consumption, and it doubles always-ready cost.
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
    zoneRedundant: zoneRedundant
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_17: callers authenticate with Entra bearer tokens (App Service Authentication); Event Grid cannot present client certificates to the Event Grid trigger webhook.
  // checkov:skip=CKV_AZURE_222: Event Grid delivers snapshot events to the public webhook, and the HTTP API is public behind Entra authentication; add private endpoints with a virtual network to close it.
  // checkov:skip=CKV_AZURE_212: Flex Consumption has no worker count; the platform scales instances per trigger group and keeps the always-ready Durable instance(s).
  // checkov:skip=CKV_AZURE_213: the App Service health check is not available on the Flex Consumption plan.
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': serviceName
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    publicNetworkAccess: 'Enabled'
    keyVaultReferenceIdentity: identityId
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      appSettings: appSettings
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${blobEndpoint}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
        alwaysReady: [
          {
            name: 'durable'
            instanceCount: durableAlwaysReadyInstances
          }
        ]
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
  // Easy Auth (on when authClientId is set): API bearer tokens and console sign-in sessions reach the code as
  // X-MS-CLIENT-PRINCIPAL; requests without one pass (every HTTP function answers 401, a console page sends the
  // browser to sign in; see docs/deploy.md). Event Grid gets no token, so its webhook path is excluded.
  resource authSettings 'config' = {
    // checkov:skip=CKV_AZURE_13: this is authsettingsV2, whose switch is properties.platform.enabled; the check reads the retired v1 schema (properties.enabled).
    // checkov:skip=CKV_AZURE_63: HTTP logging belongs to the site's web config, not to authsettingsV2; Flex Consumption sends request telemetry to Application Insights.
    // checkov:skip=CKV_AZURE_65: detailed error logging belongs to the web config and writes to the app file system, which Flex Consumption does not offer; errors go to Application Insights.
    // checkov:skip=CKV_AZURE_66: failed request tracing writes to the app file system, which Flex Consumption does not offer; failures are in Application Insights.
    // checkov:skip=CKV_AZURE_80: a Python app: no .NET Framework version applies.
    // checkov:skip=CKV_AZURE_88: Flex Consumption runs from its blob deployment container and does not use Azure Files.
    // checkov:skip=CKV_AZURE_222: public network access is a property of the site (see its reason above), not of authsettingsV2.
    name: 'authsettingsV2'
    properties: {
      platform: {
        enabled: authEnabled
      }
      globalValidation: {
        requireAuthentication: false
        unauthenticatedClientAction: 'AllowAnonymous'
        excludedPaths: [
          '/runtime/webhooks/eventgrid'
        ]
      }
      httpSettings: {
        requireHttps: true
      }
      login: {
        tokenStore: {
          enabled: false
        }
      }
      identityProviders: authEnabled ? {
        azureActiveDirectory: {
          enabled: true
          registration: {
            clientId: authClientId
            openIdIssuer: '${environment().authentication.loginEndpoint}${authTenantId}/v2.0'
          }
          validation: {
            allowedAudiences: [
              'api://${authClientId}'
              authClientId
            ]
          }
        }
      } : {}
    }
  }
}

// Publishing uses Entra tokens (azd, Core Tools, az CLI); basic-auth publishing credentials are off.
resource ftpPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'scm'
  properties: {
    allow: false
  }
}

output id string = functionApp.id
output name string = functionApp.name
output defaultHostName string = functionApp.properties.defaultHostName
