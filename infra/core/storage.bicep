// The exporter's storage account: Functions host storage (Durable task hub, Flex deployment
// package) and the exporter's own containers. Identity-based access only: shared keys are off, so
// no connection string or account key exists anywhere in the deployment.

@description('Storage account name (3-24 lowercase letters and digits).')
param name string

@description('Azure region.')
param location string

@description('Tags for every resource.')
param tags object = {}

@description('Replication. Geo-redundant by default: the state container decides what gets re-sent to ActiveCampaign.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
  'Standard_RAGRS'
  'Standard_RAGZRS'
])
param skuName string = 'Standard_GRS'

@description('Blob container holding the Flex Consumption deployment package.')
param deploymentContainerName string

@description('Blob container Event Grid writes undeliverable snapshot events to.')
param deadLetterContainerName string

@description('Days after which everything under the runs container (rejected rows, chunks, plans, reports: personal data) is deleted.')
@minValue(1)
@maxValue(3650)
param runRetentionDays int = 30

@description('Days after which segment snapshots are deleted; 0 keeps them until you delete them.')
@minValue(0)
@maxValue(3650)
param snapshotRetentionDays int = 0

@description('Days a deleted blob or container stays recoverable (soft delete).')
@minValue(1)
@maxValue(365)
param softDeleteRetentionDays int = 7

// The exporter's store layout (docs/architecture.md): every path starts with one of these.
var exporterContainers = [
  'config'
  'runs'
  'state'
  'snapshots'
]

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_59: a Flex Consumption app without a virtual network reaches storage over the public endpoint; every request needs an Entra token (shared keys are off).
  // checkov:skip=CKV_AZURE_35: same reason: a default-deny firewall would lock out the app unless you add VNet integration and private endpoints (see docs/deploy.md).
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: {
    accessTier: 'Hot'
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowCrossTenantReplication: false
    isLocalUserEnabled: false
    isSftpEnabled: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: {
          enabled: true
          keyType: 'Account'
        }
        file: {
          enabled: true
          keyType: 'Account'
        }
        queue: {
          enabled: true
          keyType: 'Account'
        }
        table: {
          enabled: true
          keyType: 'Account'
        }
      }
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    // Soft delete protects against mistakes; versioning stays off because state and run blobs are
    // rewritten often and every version of a run artefact would keep personal data alive.
    deleteRetentionPolicy: {
      enabled: true
      days: softDeleteRetentionDays
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: softDeleteRetentionDays
    }
    isVersioningEnabled: false
  }
}

resource containers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [for containerName in concat(exporterContainers, [deploymentContainerName, deadLetterContainerName]): {
  parent: blobService
  name: containerName
  properties: {
    publicAccess: 'None'
  }
}]

// Run artefacts hold personal data (rejected rows, chunks, dry-run plans): they are deleted after
// the retention period. Blob lifecycle rules filter by prefix only, so the whole runs container
// ages out (reports included); the incremental state lives in the state container and is kept.
var runsRule = {
  enabled: true
  name: 'delete-run-artefacts'
  type: 'Lifecycle'
  definition: {
    filters: {
      blobTypes: [
        'blockBlob'
      ]
      prefixMatch: [
        'runs/'
      ]
    }
    actions: {
      baseBlob: {
        delete: {
          daysAfterModificationGreaterThan: runRetentionDays
        }
      }
      snapshot: {
        delete: {
          daysAfterCreationGreaterThan: runRetentionDays
        }
      }
    }
  }
}

var snapshotsRule = {
  enabled: true
  name: 'delete-old-snapshots'
  type: 'Lifecycle'
  definition: {
    filters: {
      blobTypes: [
        'blockBlob'
      ]
      prefixMatch: [
        'snapshots/'
      ]
    }
    actions: {
      baseBlob: {
        delete: {
          daysAfterModificationGreaterThan: snapshotRetentionDays
        }
      }
    }
  }
}

resource lifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    policy: {
      rules: concat([
        runsRule
      ], (snapshotRetentionDays > 0) ? [
        snapshotsRule
      ] : [])
    }
  }
}

output id string = storage.id
output name string = storage.name
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output queueEndpoint string = storage.properties.primaryEndpoints.queue
output tableEndpoint string = storage.properties.primaryEndpoints.table
