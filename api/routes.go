package api

import "github.com/gin-gonic/gin"

// routes registers every route of the API.
func (s *server) routes(r *gin.Engine) {
	r.Use(s.recoverJSON(), s.accessLog(), s.limitBody())
	r.NoRoute(func(c *gin.Context) { fail(c, errNotFound("no such route")) })
	r.NoMethod(func(c *gin.Context) { fail(c, apiError{405, "method_not_allowed", "method not allowed on this route"}) })

	r.GET("/healthz", s.handleHealthz())
	r.GET("/readyz", s.handleReadyz())
	r.GET("/openapi.yaml", s.handleOpenAPI())

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
	user.GET("/session", s.handleGetSession())
	user.DELETE("/session", s.handleCloseSession())
}
