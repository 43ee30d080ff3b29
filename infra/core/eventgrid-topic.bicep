// Event Grid system topic on the storage account: the source of the snapshot Event Grid trigger
// (name only, never content). The subscription that delivers BlobCreated events to the
// function is created after the code is deployed (infra/eventgrid.bicep), because its webhook
// needs the eventgrid_extension key, which exists only once the trigger function does.

@description('System topic name.')
param name string

@description('Azure region (the storage account\'s).')
param location string

@description('Tags for every resource.')
param tags object = {}

@description('Resource id of the storage account whose events the topic publishes.')
param storageAccountId string

resource systemTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: name
  location: location
  tags: tags
  // Its own identity writes undeliverable events to the dead-letter container (no account keys).
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    source: storageAccountId
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}

output name string = systemTopic.name
output principalId string = systemTopic.identity.principalId
