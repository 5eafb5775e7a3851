package dev.contrail.jdbc;

import org.junit.jupiter.api.extension.ExtensionContext;
import org.junit.jupiter.api.extension.ParameterContext;
import org.junit.jupiter.api.extension.ParameterResolver;

/**
 * Resolves a {@link ContrailServer} parameter to one server shared by every test class of the run, started on first
 * use with the TPC-H sample (scale 0.01) and stopped when the run ends.
 */
final class SharedServer implements ParameterResolver {
    private static final ExtensionContext.Namespace NS = ExtensionContext.Namespace.create(SharedServer.class);

    @Override
    public boolean supportsParameter(ParameterContext param, ExtensionContext ctx) {
        return param.getParameter().getType() == ContrailServer.class;
    }

    @Override
    public Object resolveParameter(ParameterContext param, ExtensionContext ctx) {
        return ctx.getRoot().getStore(NS).getOrComputeIfAbsent("server", key -> {
            try {
                return new Handle(ContrailServer.start("--sample", "tpch", "--sample-scale", "0.01"));
            } catch (Exception e) {
                throw new IllegalStateException("could not start contrail", e);
            }
        }, Handle.class).server;
    }

    /** Closed by JUnit when the root context closes, i.e. at the end of the run. */
    private record Handle(ContrailServer server) implements ExtensionContext.Store.CloseableResource {
        @Override
        public void close() throws Throwable {
            server.close();
        }
    }
}
