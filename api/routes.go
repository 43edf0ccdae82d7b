package api

import "github.com/gin-gonic/gin"

// routes registers every route of the API.
func (s *server) routes(r *gin.Engine) {
	r.Use(measure(), s.recoverJSON(), s.accessLog(), s.limitBody())
	// Under /v1/admin even a route that does not exist answers 401/403
	// before 404/405, so a non-admin learns nothing about the admin API.
	r.NoRoute(s.guardAdminPaths(), func(c *gin.Context) { fail(c, errNotFound("no such route")) })
	r.NoMethod(s.guardAdminPaths(), func(c *gin.Context) {
		fail(c, apiError{405, "method_not_allowed", "method not allowed on this route"})
	})

	r.GET("/", handleWeb("index.html"))
	r.GET("/web/*file", handleWeb(""))
	r.GET("/healthz", s.handleHealthz())
	r.GET("/readyz", s.handleReadyz())
	r.GET("/openapi.yaml", s.handleOpenAPI())
	r.GET("/metrics", handleMetrics())

	v1 := r.Group("/v1")
	v1.POST("/auth/register", s.handleRegister())
	v1.POST("/auth/login", s.handleLogin())
	v1.POST("/auth/refresh", s.handleRefresh())

	user := v1.Group("", s.requireUser())
	user.POST("/auth/logout", s.handleLogout())
	user.POST("/requests", s.handleSubmit())
	user.POST("/requests/batch", s.handleSubmitBatch())
	user.GET("/requests", s.handleListRequests())
	user.GET("/requests/:id", s.handleGetRequest())
	user.DELETE("/requests/:id", s.handleCancelRequest())
	user.POST("/requests/:id/requeue", s.handleRequeueRequest())
	user.GET("/types", s.handleListTypes())
	user.GET("/session", s.handleGetSession())
	user.DELETE("/session", s.handleCloseSession())
	user.GET("/events", s.handleEvents())

	admin := v1.Group("/admin", s.requireUser(), s.requireAdmin())
	admin.GET("/sessions", s.handleAdminListSessions())
	admin.GET("/sessions/:user_id", s.handleAdminShowSession())
	admin.POST("/sessions/:user_id/pause", s.handleAdminSteer(steerPause))
	admin.POST("/sessions/:user_id/resume", s.handleAdminSteer(steerResume))
	admin.POST("/sessions/:user_id/close", s.handleAdminSteer(steerClose))
	admin.PUT("/sessions/:user_id/policy", s.handleAdminSetPolicy())
	admin.GET("/requests/:id", s.handleAdminGetRequest())
	admin.POST("/requests/:id/cancel", s.handleAdminCancelRequest())
	admin.POST("/requests/:id/requeue", s.handleAdminRequeue())
	admin.GET("/users", s.handleAdminListUsers())
	admin.POST("/users/:id/disable", s.handleAdminSetDisabled(true))
	admin.POST("/users/:id/enable", s.handleAdminSetDisabled(false))
	admin.GET("/stats", s.handleAdminStats())
}
