// Log Analytics + workspace-based Application Insights (Entra-only ingestion), an alert for every
// bad ending of an export run, for a run that never ends, and for throttled answers, and the
// "Export runs" workbook.
//
// The alerts read the records the code writes through OpenTelemetry (exporter/telemetry.py,
// exported unsampled by blueprints/telemetry.py): `run_started` and `run_ended` traces whose
// customDimensions carry export, run_id, phase, connection, account and, at the end, status; and
// the `exporter.*` customMetrics.

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

@description('Address that receives the export alerts; empty creates the action group without receivers.')
param alertEmail string = ''

@description('Hours after its start by which a run must have written its report; past that it is reported stuck. The longest expected run (10 million contacts send in about 7 hours) must fit.')
@minValue(1)
@maxValue(46)
param stuckAfterHours int = 12

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

// Every final status of a run that somebody has to look at (exporter.telemetry.BAD_ENDINGS; a
// test keeps the two lists equal). `completed`, `dry_run` and `cancelled` raise nothing.
var badEndings = [
  {
    status: 'failed'
    severity: 1
    title: 'Export run failed'
    description: 'An export run ended failed: nothing more is sent until the next run, which sends again whatever was not confirmed. The report (runs/<export>/<run_id>/report.json) says why.'
  }
  {
    status: 'completed_with_failures'
    severity: 2
    title: 'Export run completed with failures'
    description: 'An export run ended with contacts ActiveCampaign did not confirm; the next run sends them again. The report lists the reasons.'
  }
  {
    status: 'guarded'
    severity: 2
    title: 'Export run stopped by a guard'
    description: 'The shrink guard or the rejected-rows cap stopped an export run before it sent anything. Check the snapshot; rerun with allow_shrink if the change is intended.'
  }
  {
    status: 'terminated'
    severity: 2
    title: 'Export run terminated'
    description: 'An export run was force-terminated; its report was written by the next run or the timer sweep. What it confirmed is committed; the rest is sent next run.'
  }
  {
    status: 'abandoned'
    severity: 2
    title: 'Export run abandoned'
    description: 'The host of an export run stopped (a crash or a killed worker) and another run or the timer sweep closed it. What it confirmed is committed; the rest is sent next run.'
  }
]

var endedRuns = 'traces | where tostring(customDimensions["event"]) == "run_ended" | extend status = tostring(customDimensions["status"]), export_name = tostring(customDimensions["export"]), run_id = tostring(customDimensions["run_id"]), connection = tostring(customDimensions["connection"])'

resource runEndedAlerts 'Microsoft.Insights/scheduledQueryRules@2022-06-15' = [
  for ending in badEndings: {
    name: 'alert-export-run-${replace(ending.status, '_', '-')}-${applicationInsightsName}'
    location: location
    tags: tags
    properties: {
      displayName: ending.title
      description: ending.description
      severity: ending.severity
      enabled: true
      scopes: [
        applicationInsights.id
      ]
      evaluationFrequency: 'PT5M'
      windowSize: 'PT5M'
      criteria: {
        allOf: [
          {
            query: '${endedRuns} | where status == "${ending.status}" | project timestamp, export_name, run_id, connection'
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
]

// A run that started (prepare took it on) and wrote no report within stuckAfterHours: a host
// that died with nobody to close the run, a finalize that itself failed, an orchestration stuck
// in Running. Evaluated hourly over the runs that started in one hour-long slice, so each stuck
// run is reported once.
var stuckRunsQuery = 'let ended = traces | where tostring(customDimensions["event"]) == "run_ended" | project run_id = tostring(customDimensions["run_id"]); traces | where tostring(customDimensions["event"]) == "run_started" | where timestamp between (ago(${stuckAfterHours + 1}h) .. ago(${stuckAfterHours}h)) | project timestamp, export_name = tostring(customDimensions["export"]), run_id = tostring(customDimensions["run_id"]) | join kind=leftanti ended on run_id | project timestamp, export_name, run_id'

resource stuckRunAlert 'Microsoft.Insights/scheduledQueryRules@2022-06-15' = {
  name: 'alert-export-run-stuck-${applicationInsightsName}'
  location: location
  tags: tags
  properties: {
    displayName: 'Export run stuck'
    description: 'An export run started ${stuckAfterHours} hours ago and has written no report. Look at its orchestration; the timer sweep closes a run whose host is gone.'
    severity: 1
    enabled: true
    scopes: [
      applicationInsights.id
    ]
    evaluationFrequency: 'PT1H'
    windowSize: 'P2D'
    criteria: {
      allOf: [
        {
          query: stuckRunsQuery
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

// ActiveCampaign answered 429 (or the bulk "rate limit exceeded") for an account: the limiter is
// meant to keep every run under the account's budget, so any throttle means something else uses
// the account, or the budget changed.
var throttledQuery = 'customMetrics | where name == "exporter.throttled_answers" | extend account = tostring(customDimensions["account"]), throttled = valueSum | project timestamp, account, throttled'

resource throttledAlert 'Microsoft.Insights/scheduledQueryRules@2022-06-15' = {
  name: 'alert-activecampaign-throttled-${applicationInsightsName}'
  location: location
  tags: tags
  properties: {
    displayName: 'ActiveCampaign throttled an account'
    description: 'ActiveCampaign answered throttled (429 or the bulk rate limit) to requests for an account. Something else may be using its API budget; the runs waited and went on.'
    severity: 3
    enabled: true
    scopes: [
      applicationInsights.id
    ]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: throttledQuery
          timeAggregation: 'Total'
          metricMeasureColumn: 'throttled'
          operator: 'GreaterThan'
          threshold: 0
          dimensions: [
            {
              name: 'account'
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

// The "Export runs" workbook: run history per export, and the accounts' budget use.
var runHistoryQuery = '${endedRuns} | extend rows_read = tolong(customDimensions["rows_read"]), sent = tolong(customDimensions["sent"]), confirmed = tolong(customDimensions["confirmed"]), rejected = tolong(customDimensions["rejected"]), failed = tolong(customDimensions["failed"]), bulk_requests = tolong(customDimensions["bulk_requests"]), seconds = todouble(customDimensions["seconds"]) | project timestamp, export_name, run_id, status, rows_read, sent, confirmed, rejected, failed, bulk_requests, seconds, connection | order by export_name asc, timestamp desc'
var runStatusQuery = '${endedRuns} | summarize runs = count() by export_name, status | order by export_name asc'
var budgetQuery = 'customMetrics | where name == "exporter.budget_used" | extend account = tostring(customDimensions["account"]) | summarize budget_used = max(valueMax) by account, bin(timestamp, 1h) | render timechart'
var bulkRequestsQuery = 'customMetrics | where name == "exporter.bulk_requests" | extend account = tostring(customDimensions["account"]) | summarize bulk_requests = sum(valueSum) by account, bin(timestamp, 1h) | render timechart'
var throttledHistoryQuery = 'customMetrics | where name == "exporter.throttled_answers" | extend account = tostring(customDimensions["account"]) | summarize throttled = sum(valueSum) by account, bin(timestamp, 1h) | render columnchart'

var workbookContent = {
  version: 'Notebook/1.0'
  items: [
    {
      type: 1
      name: 'intro'
      content: {
        json: '## Export runs\n\nEvery run that ended, per export (the run_ended records), and how much of each ActiveCampaign account\'s bulk-import budget (100 requests a minute) the runs used while sending.'
      }
    }
    {
      type: 3
      name: 'run-history'
      content: {
        version: 'KqlItem/1.0'
        title: 'Run history per export'
        query: runHistoryQuery
        size: 0
        queryType: 0
        resourceType: 'microsoft.insights/components'
        visualization: 'table'
        timeContext: {
          durationMs: 2592000000
        }
      }
    }
    {
      type: 3
      name: 'run-status'
      content: {
        version: 'KqlItem/1.0'
        title: 'Runs per export and status'
        query: runStatusQuery
        size: 1
        queryType: 0
        resourceType: 'microsoft.insights/components'
        visualization: 'table'
        timeContext: {
          durationMs: 2592000000
        }
      }
    }
    {
      type: 3
      name: 'budget-use'
      content: {
        version: 'KqlItem/1.0'
        title: 'Budget use per account (highest share a run used while sending, per hour)'
        query: budgetQuery
        size: 0
        queryType: 0
        resourceType: 'microsoft.insights/components'
        visualization: 'timechart'
        timeContext: {
          durationMs: 604800000
        }
      }
    }
    {
      type: 3
      name: 'bulk-requests'
      content: {
        version: 'KqlItem/1.0'
        title: 'Bulk-import requests per account and hour'
        query: bulkRequestsQuery
        size: 0
        queryType: 0
        resourceType: 'microsoft.insights/components'
        visualization: 'timechart'
        timeContext: {
          durationMs: 604800000
        }
      }
    }
    {
      type: 3
      name: 'throttled'
      content: {
        version: 'KqlItem/1.0'
        title: 'Throttled answers per account and hour'
        query: throttledHistoryQuery
        size: 0
        queryType: 0
        resourceType: 'microsoft.insights/components'
        visualization: 'barchart'
        timeContext: {
          durationMs: 604800000
        }
      }
    }
  ]
  isLocked: false
  fallbackResourceIds: [
    applicationInsights.id
  ]
}

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(resourceGroup().id, applicationInsightsName, 'export-runs-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: 'Export runs'
    category: 'workbook'
    sourceId: applicationInsights.id
    serializedData: string(workbookContent)
    version: 'Notebook/1.0'
  }
}

output applicationInsightsId string = applicationInsights.id
output applicationInsightsName string = applicationInsights.name
output connectionString string = applicationInsights.properties.ConnectionString
output logAnalyticsId string = logAnalytics.id
output runEndedAlertIds array = [for (ending, i) in badEndings: runEndedAlerts[i].id]
output stuckRunAlertId string = stuckRunAlert.id
output throttledAlertId string = throttledAlert.id
output workbookId string = workbook.id
