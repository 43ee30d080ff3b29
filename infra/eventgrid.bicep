// Second step, after the code is deployed: subscribe the snapshot Event Grid trigger to BlobCreated
// events of the snapshots container. Deployed by the azd postdeploy hook
// (infra/scripts/postdeploy.sh) or by hand:
//   az deployment group create -g <group> -f infra/eventgrid.bicep \
//     -p functionAppName=<app> systemTopicName=<topic> storageAccountName=<account>
// It cannot be part of main.bicep: the webhook needs the eventgrid_extension system key, which the
// Functions host creates only once a function with an Event Grid trigger is deployed.
targetScope = 'resourceGroup'

@description('Function app name (output AZURE_FUNCTION_APP_NAME of main.bicep).')
param functionAppName string

@description('Event Grid system topic on the storage account (output AZURE_EVENTGRID_SYSTEM_TOPIC_NAME).')
param systemTopicName string

@description('Storage account holding the dead-letter container (output AZURE_STORAGE_ACCOUNT_NAME).')
param storageAccountName string

@description('Blob container undeliverable events are written to.')
param deadLetterContainerName string = 'eventgrid-deadletter'

@description('Name of the blob-triggered function (the Python function name).')
param functionName string = 'snapshot_blob_trigger'

@description('Container whose new blobs start exports.')
param snapshotContainerName string = 'snapshots'

resource functionApp 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
}

resource systemTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' existing = {
  name: systemTopicName
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

// The snapshot trigger is an Event Grid trigger (it needs a blob's name, never its content): the
// runtime's Event Grid webhook authenticates Event Grid by the eventgrid_extension system key.
var eventGridExtensionKey = listKeys('${functionApp.id}/host/default', '2023-12-01').systemKeys.eventgrid_extension
var webhookUrl = 'https://${functionApp.properties.defaultHostName}/runtime/webhooks/eventgrid?functionName=${functionName}&code=${eventGridExtensionKey}'

resource snapshotSubscription 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = {
  parent: systemTopic
  // Event subscription names allow letters, digits and hyphens only.
  name: 'snapshots-to-${replace(functionName, '_', '-')}'
  properties: {
    destination: {
      endpointType: 'WebHook'
      properties: {
        endpointUrl: webhookUrl
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: [
        'Microsoft.Storage.BlobCreated'
      ]
      subjectBeginsWith: '/blobServices/default/containers/${snapshotContainerName}/'
    }
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
    // Events Event Grid could not deliver are kept, so no snapshot is silently ignored.
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'SystemAssigned'
      }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: storage.id
          blobContainerName: deadLetterContainerName
        }
      }
    }
  }
}

output subscriptionName string = snapshotSubscription.name
