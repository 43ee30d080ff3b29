// Log Analytics + workspace-based Application Insights (Entra-only ingestion) and the alert that
// fires when an export run fails.

@description('Log Analytics workspace name.')
param logAnalyticsName string

@description('Application Insights component name.')
param applicationInsightsName string

@description('Action group name.')
param actionGroupName string

@description('Azure region.')
param location string

@description('Tags for every resource.')
param tags object = {}

@description('Days logs are kept (personal data in logs is masked, but keep this short).')
@minValue(30)
@maxValue(730)
param retentionInDays int = 30

@description('Address that receives "export run failed" alerts; empty creates the action group without receivers.')
param alertEmail string = ''

resource logAnalytics 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: logAnalyticsName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionInDays
    features: {
      enableLogAccessUsingOnlyResourcePermissions: true
    }
  }
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: applicationInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logAnalytics.id
    // Telemetry is accepted only with an Entra token (the app's identity holds Monitoring Metrics
    // Publisher): the connection string alone cannot be used to inject data.
    DisableLocalAuth: true
    IngestionMode: 'LogAnalytics'
    publicNetworkAccessForIngestion: 'Enabled'
    publicNetworkAccessForQuery: 'Enabled'
  }
}

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: actionGroupName
  location: 'Global'
  tags: tags
  properties: {
    groupShortName: 'exporter'
    enabled: true
    emailReceivers: empty(alertEmail) ? [] : [
      {
        name: 'operator'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

// The engine logs: logger.error("export run failed: <export> run <run_id>", extra={...}); the names
// are parsed from the message because Python's `extra` does not reach customDimensions by default.
// The export name is read from customDimensions when the logging pipeline forwards extras, and is
// reported as "unknown" otherwise, so the alert fires either way.
var failedRunQuery = 'traces | where message has "export run failed" and severityLevel >= 3 | extend export_name = tostring(customDimensions["export"]), run_id = tostring(customDimensions["run_id"]) | extend export_name = iff(isempty(export_name), extract("export run failed: ([^ ]+) run", 1, message), export_name), run_id = iff(isempty(run_id), extract("export run failed: [^ ]+ run ([^ ]+)", 1, message), run_id) | extend export_name = iff(isempty(export_name), "unknown", export_name) | project timestamp, export_name, run_id'

resource failedRunAlert 'Microsoft.Insights/scheduledQueryRules@2022-06-15' = {
  name: 'alert-export-run-failed-${applicationInsightsName}'
  location: location
  tags: tags
  properties: {
    displayName: 'Export run failed'
    description: 'An export run ended in failure (log line "export run failed"). Open the run report under runs/<export>/<run_id>/report.json.'
    severity: 1
    enabled: true
    scopes: [
      applicationInsights.id
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT5M'
    criteria: {
      allOf: [
        {
          query: failedRunQuery
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          dimensions: [
            {
              name: 'export_name'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: false
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

output applicationInsightsId string = applicationInsights.id
output applicationInsightsName string = applicationInsights.name
output connectionString string = applicationInsights.properties.ConnectionString
output logAnalyticsId string = logAnalytics.id
output failedRunAlertId string = failedRunAlert.id
