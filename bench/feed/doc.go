// Package benchfeed measures how a managed agent converges under policy
// churn: a burst of applies to an in-process manager, one agent following
// it, and the lag between each revision's commit and the agent realizing
// it. See README.md.
package benchfeed
